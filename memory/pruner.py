"""The retention pruner: applies :func:`policies.retention.decide_retention` to the store.

Per tenant, :meth:`Pruner.run_once` reads what retention needs of every live memory outside
the protected tiers (ids, tiers, timestamps and usefulness counts: no content, no vectors),
asks the policy, and applies its decisions through :meth:`MemoryStore.mark`, guarded by the
tier the decision saw, so that a memory changed in between (say, moved to ``long_term`` by
its user) is left alone. Archiving sets ``archived`` (out of search, kept in exports); a
promotion sets the tier to semantic and keeps the id. Both are idempotent, so a second run
over unchanged data does nothing.

The background loop prunes every tenant of the store each ``interval_s`` seconds; it is
owned by :class:`memory.service.MemoryService` (``start``/``aclose``) and stops at once:
an interrupted run leaves every memory either changed or not, and the next run resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from memory.model import Tier, utcnow
from memory.store import Change, MemoryStats, MemoryStore, ScopeFilter
from memory.usefulness import UsefulnessPrior, posterior_mean
from policies.retention import (
    DEFAULT_RETENTION,
    PROTECTED_TIERS,
    RetentionAction,
    RetentionItem,
    RetentionPolicy,
    decide_retention,
)

__all__ = ["PruneReport", "Pruner"]

log = logging.getLogger(__name__)
events = logging.getLogger("memshadow.events")
_MARK_BATCH = 512
_PRUNABLE = frozenset(t for t in Tier if t.value not in PROTECTED_TIERS)


@dataclass(frozen=True)
class PruneReport:
    """What one run did to one tenant: memories looked at, archived and promoted."""

    tenant: str
    scanned: int
    archived: int
    promoted: int


class Pruner:
    """Archives and promotes memories per the retention policy, once or in the background."""

    def __init__(
        self,
        store: MemoryStore,
        *,
        retention: RetentionPolicy = DEFAULT_RETENTION,
        prior: UsefulnessPrior = UsefulnessPrior(),
        interval_s: float = 600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._retention = retention
        self._prior = prior
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, tenant: str) -> PruneReport:
        stats = await self._store.stats(tenant, ScopeFilter(tiers=_PRUNABLE))
        actions = decide_retention((self._item(s) for s in stats), self._clock(), self._retention)
        changed: set[str] = set()
        for start in range(0, len(actions), _MARK_BATCH):
            chunk = actions[start : start + _MARK_BATCH]
            changed.update(await self._store.mark(tenant, {a.id: _change(a) for a in chunk}))
        applied = [a for a in actions if a.id in changed]
        for action in applied:
            _report(tenant, action)
        return PruneReport(
            tenant,
            scanned=len(stats),
            archived=sum(a.kind == "archive" for a in applied),
            promoted=sum(a.kind == "promote" for a in applied),
        )

    def _item(self, stats: MemoryStats) -> RetentionItem:
        mean = posterior_mean(stats.useful, stats.not_useful, self._prior)
        return RetentionItem(
            stats.id, stats.user, stats.tier.value, stats.created_at, mean, stats.useful
        )

    # -- background --------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="memshadow-pruner")

    async def aclose(self) -> None:
        """Stop now, even mid-run (every step is idempotent; the next start resumes)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._run_all()

    async def _run_all(self) -> None:
        try:
            tenants = await self._store.tenants()
        except (OSError, RuntimeError, ValueError) as error:
            log.warning("pruner could not list tenants: %s", error)
            return
        for tenant in tenants:
            try:
                report = await self.run_once(tenant)
            except (OSError, RuntimeError, ValueError) as error:
                # One tenant's trouble (a model mismatch, a disk error) must not stop the rest.
                log.warning("pruning tenant %r failed: %s", tenant, error)
                continue
            if report.archived or report.promoted:
                log.info(
                    "pruned tenant %r: %d scanned, %d archived, %d promoted",
                    tenant, report.scanned, report.archived, report.promoted,
                )  # fmt: skip


def _change(action: RetentionAction) -> Change:
    if action.kind == "promote":
        return Change(tier=Tier.SEMANTIC, if_tier=Tier(action.tier))
    return Change(archived=True, if_tier=Tier(action.tier))


def _report(tenant: str, action: RetentionAction) -> None:
    verb = "archived" if action.kind == "archive" else "promoted"
    events.info(
        "memory %s tenant=%s id=%s tier=%s reason=%s activation=%.4f",
        verb, tenant, action.id, action.tier, action.reason, action.activation,
        extra={"event": f"memory.{verb}", "tenant": tenant, "memory_id": action.id,
               "tier": action.tier, "reason": action.reason},
    )  # fmt: skip
