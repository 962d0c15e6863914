"""Retention policy: how fast each memory tier fades and how much of it a user may keep.

Pure functions and frozen data only; the memory engine asks, this module answers. Tiers are
plain strings here (``"working"``, ``"episodic"``, ``"semantic"``, ``"long_term"``) so that
``policies/`` does not depend on ``memory/``.

Half-lives, chosen for a chat assistant:

- ``working``: this session's scratch context, useless after a day → 6 hours.
- ``episodic``: captured exchanges; what was said last week matters more than last year → 14 days.
- ``semantic``: facts distilled from episodes stay true for a long time → 180 days.
- ``long_term``: stored on purpose by the app or the user; barely fades → 2 years.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_RETENTION",
    "RetentionPolicy",
    "TierRetention",
    "decay",
    "over_cap",
]

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
    """Per-tier retention; unknown tiers fall back to ``default``."""

    tiers: Mapping[str, TierRetention] = field(default_factory=dict)
    default: TierRetention = TierRetention(half_life_s=180 * _DAY, floor=0.2)

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


def decay(age_s: float, retention: TierRetention) -> float:
    """Weight in ``[floor, 1]`` of a memory ``age_s`` seconds old (exponential half-life).

    A negative age (a timestamp slightly in the future, clock skew) counts as brand new.
    """
    if age_s <= 0 or retention.half_life_s <= 0:
        return 1.0
    raw = math.exp(-math.log(2.0) * age_s / retention.half_life_s)
    return retention.floor + (1.0 - retention.floor) * raw


def over_cap(live_count: int, retention: TierRetention) -> int:
    """How many of a user's live memories in a tier exceed its cap (0 when within it)."""
    if retention.cap is None:
        return 0
    return max(0, live_count - retention.cap)
