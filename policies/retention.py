"""Retention policy: how fast each memory tier fades and how much of it a user may keep.

Pure functions and frozen data only; the memory engine asks, this module answers. Tiers are
plain strings here (``"working"``, ``"episodic"``, ``"semantic"``, ``"long_term"``) so that
``policies/`` does not depend on ``memory/``.

Half-lives, chosen for a chat assistant:

- ``working``: this session's scratch context, useless after a day → 6 hours.
- ``episodic``: captured exchanges; what was said last week matters more than last year → 14 days.
- ``semantic``: facts distilled from episodes stay true for a long time → 180 days.
- ``long_term``: stored on purpose by the app or the user; barely fades → 2 years.

Pruning (:func:`decide_retention`, run by :mod:`memory.pruner`). A memory's *activation* is
its tier's decay at its age times its usefulness posterior mean (0.5 with no feedback):

- ``long_term`` memories are never touched (:data:`PROTECTED_TIERS`): the user stored them
  on purpose, and only the user removes them.
- An episodic memory that keeps proving useful (at least ``promote_min_useful`` useful
  credits and a posterior mean of at least ``promote_min_mean``) is promoted to semantic.
- A memory whose activation falls below ``archive_below`` is archived (never deleted). The
  default 0.04 is under the episodic and semantic decay floors times the prior mean 0.5
  (0.05 and 0.15), so decay alone archives only working memories (floor 0: within a day);
  an episodic memory goes once it has aged with a posterior mean below 0.4 (repeated
  failures), a semantic one only after many failures.
- Past a tier's cap, a user's lowest-activation memories of the tier are archived.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_RETENTION",
    "PROTECTED_TIERS",
    "RetentionAction",
    "RetentionItem",
    "RetentionPolicy",
    "TierRetention",
    "activation",
    "decay",
    "decide_retention",
    "over_cap",
]

# Stored on purpose by the user or the app: pruning never archives, promotes or caps them.
PROTECTED_TIERS = frozenset({"long_term"})

_HOUR = 3600.0
_DAY = 24 * _HOUR


@dataclass(frozen=True)
class TierRetention:
    """Decay half-life and a cap on how many live memories one user keeps in the tier.

    ``cap`` of ``None`` means unbounded. ``floor`` is the weight an arbitrarily old memory
    keeps, so that a very old but very relevant memory can still win on relevance.
    """

    half_life_s: float
    cap: int | None = None
    floor: float = 0.0


@dataclass(frozen=True)
class RetentionPolicy:
    """Per-tier retention; unknown tiers fall back to ``default``. Pruning thresholds too."""

    tiers: Mapping[str, TierRetention] = field(default_factory=dict)
    default: TierRetention = TierRetention(half_life_s=180 * _DAY, floor=0.2)
    archive_below: float = 0.04
    promote_min_useful: float = 3.0
    promote_min_mean: float = 0.7

    def for_tier(self, tier: str) -> TierRetention:
        return self.tiers.get(tier, self.default)


DEFAULT_RETENTION = RetentionPolicy(
    tiers={
        "working": TierRetention(half_life_s=6 * _HOUR, cap=2_000, floor=0.0),
        "episodic": TierRetention(half_life_s=14 * _DAY, cap=200_000, floor=0.1),
        "semantic": TierRetention(half_life_s=180 * _DAY, cap=None, floor=0.3),
        "long_term": TierRetention(half_life_s=730 * _DAY, cap=None, floor=0.5),
    }
)


def decay(age_s: npt.ArrayLike, retention: TierRetention) -> npt.NDArray[np.float64]:
    """Weight in ``[floor, 1]`` of memories ``age_s`` seconds old (exponential half-life),
    elementwise: ranking weighs a search's candidates at once.

    A negative age (a timestamp slightly in the future, clock skew) counts as brand new.
    """
    age = np.asarray(age_s, np.float64)
    if retention.half_life_s <= 0:
        return np.ones_like(age)
    raw = np.exp(-math.log(2.0) * np.maximum(age, 0.0) / retention.half_life_s)
    weight: npt.NDArray[np.float64] = np.where(
        age <= 0, 1.0, retention.floor + (1.0 - retention.floor) * raw
    )
    return weight


def over_cap(live_count: int, retention: TierRetention) -> int:
    """How many of a user's live memories in a tier exceed its cap (0 when within it)."""
    if retention.cap is None:
        return 0
    return max(0, live_count - retention.cap)


@dataclass(frozen=True)
class RetentionItem:
    """What pruning knows of one live memory; ``usefulness`` is its posterior mean."""

    id: str
    user: str
    tier: str
    created_at: datetime
    usefulness: float
    useful: float


@dataclass(frozen=True)
class RetentionAction:
    """Archive a memory or promote it to semantic; ``reason`` is floor, cap or useful."""

    kind: Literal["archive", "promote"]
    id: str
    user: str
    tier: str
    reason: str
    activation: float


def activation(item: RetentionItem, now: datetime, policy: RetentionPolicy) -> float:
    """Recency decay by the tier's half-life times the usefulness posterior mean."""
    age_s = (now - item.created_at).total_seconds()
    return float(decay(age_s, policy.for_tier(item.tier))) * item.usefulness


def decide_retention(
    items: Iterable[RetentionItem], now: datetime, policy: RetentionPolicy
) -> list[RetentionAction]:
    """Promotions, then archives below the floor, then archives past each tier's cap."""
    actions: list[RetentionAction] = []
    remaining: dict[tuple[str, str], list[tuple[float, RetentionItem]]] = {}
    for item in items:
        if item.tier in PROTECTED_TIERS:
            continue
        level = activation(item, now, policy)
        action = _promotion(item, level, policy) or _floor(item, level, policy)
        if action is not None:
            actions.append(action)
        else:
            remaining.setdefault((item.user, item.tier), []).append((level, item))
    for (_, tier), group in sorted(remaining.items(), key=lambda kv: kv[0]):
        actions.extend(_over_cap(tier, group, policy))
    return actions


def _promotion(
    item: RetentionItem, level: float, policy: RetentionPolicy
) -> RetentionAction | None:
    proven = item.useful >= policy.promote_min_useful and item.usefulness >= policy.promote_min_mean
    if item.tier != "episodic" or not proven:
        return None
    return RetentionAction("promote", item.id, item.user, item.tier, "useful", level)


def _floor(item: RetentionItem, level: float, policy: RetentionPolicy) -> RetentionAction | None:
    if level >= policy.archive_below:
        return None
    return RetentionAction("archive", item.id, item.user, item.tier, "floor", level)


def _over_cap(
    tier: str, staying: list[tuple[float, RetentionItem]], policy: RetentionPolicy
) -> list[RetentionAction]:
    """Archive the lowest-activation memories past the cap (ties: oldest first, then id).

    ``staying`` excludes memories leaving the tier in this run (archived or promoted): they
    neither count towards the cap nor are victims.
    """
    excess = over_cap(len(staying), policy.for_tier(tier))
    if excess == 0:
        return []
    victims = sorted(staying, key=lambda pair: (pair[0], pair[1].created_at, pair[1].id))
    return [
        RetentionAction("archive", item.id, item.user, tier, "cap", level)
        for level, item in victims[:excess]
    ]
