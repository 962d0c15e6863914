"""Per-tenant request limits, shared by replicas without a round trip per request.

Each replica decides on its own, in RAM, from the tenant's shared counts as last read plus
the requests it admitted since; every ``flush_s`` it adds those to the shared counts (one
``HINCRBYFLOAT`` pipeline per active tenant, which also reads back what every replica
counted). So a tenant is held to its limit across the fleet, give or take what the other
replicas admitted in the last ``flush_s``. While the shared state is down each replica
counts alone (and adds its counts when it is back): a tenant may then get its limit from
every replica.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.decision import MemoryPolicy, PolicyInputError, tenant_policy
from policies.rate_limit import retry_after, window_of
from proxy.errors import RateLimited, SharedStateUnavailable
from proxy.shared_state import SharedState

__all__ = ["RateLimiter", "requests_per_minute"]

WINDOW_S = 60.0


def requests_per_minute(base: MemoryPolicy, overrides: Mapping[str, Any]) -> int | None:
    """The tenant's limit (its policy's ``requests_per_minute``, else the deployment's)."""
    if "requests_per_minute" not in overrides:  # no validation on the hot path then
        return base.requests_per_minute
    try:
        return tenant_policy(base, overrides).requests_per_minute
    except PolicyInputError:
        return base.requests_per_minute  # an invalid policy falls back, as for injection


@dataclass
class _Counts:
    shared: dict[int, float] = field(default_factory=dict)  # window -> every replica's count
    pending: dict[int, float] = field(default_factory=dict)  # admitted here, not yet added
    inflight: dict[int, float] = field(default_factory=dict)  # being added right now
    seen: float = 0.0  # when a request last came (monotonic): idle tenants stop syncing

    def count(self, window: int) -> float:
        return sum(c.get(window, 0.0) for c in (self.shared, self.pending, self.inflight))


class RateLimiter:
    """Admits or refuses (429 with ``Retry-After``) each tenant's requests per minute."""

    def __init__(
        self,
        shared: SharedState,
        *,
        flush_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._shared = shared
        self._flush_s = flush_s
        self._clock = clock
        self._tenants: dict[str, _Counts] = {}
        self._syncer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._syncer = asyncio.create_task(self._sync_loop(), name="memshadow-rate-limits")

    async def aclose(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
        await self.sync()

    def admit(self, tenant: str, per_minute: int | None) -> None:
        """Count one request of ``tenant``, or raise :class:`RateLimited` (no I/O)."""
        if per_minute is None:
            return
        window, elapsed = window_of(self._clock(), WINDOW_S)
        counts = self._tenants.setdefault(tenant, _Counts())
        counts.seen = time.monotonic()
        wait = retry_after(
            per_minute, counts.count(window - 1), counts.count(window), elapsed, WINDOW_S
        )
        if wait is not None:
            wait = round(wait, 3)  # 80.0000001 s is 80 s
            raise RateLimited(
                f"Rate limit reached for tenant {tenant}: {per_minute} requests per minute."
                f" Try again in {math.ceil(wait)}s.",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        counts.pending[window] = counts.pending.get(window, 0.0) + 1

    async def sync(self) -> None:
        """Add what was admitted here to the shared counts and read back everyone's."""
        window, _ = window_of(self._clock(), WINDOW_S)
        idle_before = time.monotonic() - 2 * WINDOW_S
        for tenant, counts in list(self._tenants.items()):
            if counts.seen < idle_before and not counts.pending:
                del self._tenants[tenant]
                continue
            await self._sync_tenant(tenant, counts, window)

    async def _sync_tenant(self, tenant: str, counts: _Counts, window: int) -> None:
        key = f"ratelimit:{tenant}"
        counts.inflight, counts.pending = counts.pending, {}
        try:
            totals = await self._shared.add(key, {str(w): n for w, n in counts.inflight.items()})
            stale = [name for name in totals if int(name) < window - 1]
            if stale:
                await self._shared.release(key, stale)
        except SharedStateUnavailable:
            for w, n in counts.inflight.items():  # added once the shared state is back
                counts.pending[w] = counts.pending.get(w, 0.0) + n
            counts.inflight = {}
            return
        counts.inflight = {}
        counts.shared = {int(name): n for name, n in totals.items() if int(name) >= window - 1}

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.sync()
