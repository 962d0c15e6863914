"""The stream writer: applies the ingestion streams of the tenants whose lease it holds.

Two tasks. The *lease loop*, every ``lease_ttl_s / 5``, renews the leases held, takes the
free leases of tenants with entries (every replica sweeps, so the tenants of a writer that
died are taken over once its leases expire) and of tenants this replica just appended to,
and gives back leases idle for ``idle_s``. The *apply loop* reads the held tenants' new
entries (one blocking read for all of them), applies each tenant's entries as one batch
through :class:`memory.apply.BatchApplier` and acks them after the commit. A tenant whose
lease was just taken, or whose batch failed, first claims its unacknowledged entries (the
previous holder's, or its own), oldest first, so a tenant's entries are applied in order.

Fencing. A lease counts as held until half its TTL past the last renewal *sent*, so this
replica stops writing a tenant at least ``lease_ttl_s / 2`` before Redis could hand the
lease to another, and it checks the lease between embedding a batch (the slow part) and
writing it. A writer that stalls longer than that inside a write can still overlap with
its successor; both upsert the same rows by id, so the table stays one row per memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from memory.apply import BatchApplier, Plan, Write
from memory.stream import StreamEntry, StreamId, StreamUnavailable, WriterQueue, decode_writes

__all__ = ["StreamWriter"]

log = logging.getLogger(__name__)
_MAX_RETRY_S = 30.0


@dataclass
class _Lease:
    """This replica's view of one tenant's lease."""

    valid_until: float  # monotonic; past it the tenant must not be written from here
    active_at: float  # when entries were last applied (or the lease taken)
    claim: bool = True  # unacknowledged entries may be waiting: apply those first
    retry_at: float = 0.0
    delay: float = 0.1


class StreamWriter:
    """Holds writer leases and applies the held tenants' entries, one tenant at a time."""

    def __init__(
        self,
        queue: WriterQueue,
        applier: BatchApplier,
        *,
        owner: str,
        lease_ttl_s: float,
        on_applied: Callable[[str, StreamId], None],
        batch_entries: int = 64,
        block_s: float = 0.05,
        idle_s: float | None = None,
    ) -> None:
        self._queue = queue
        self._applier = applier
        self._owner = owner
        self._ttl_s = lease_ttl_s
        self._renew_s = lease_ttl_s / 5
        self._idle_s = idle_s if idle_s is not None else 10 * lease_ttl_s
        self._on_applied = on_applied
        self._batch = batch_entries
        self._block_s = block_s
        self._held: dict[str, _Lease] = {}
        self._elsewhere: set[str] = set()  # held by another replica at the last try
        self._wanted: set[str] = set()
        self._poke = asyncio.Event()  # the lease loop: try the wanted tenants now
        self._work = asyncio.Event()  # the apply loop: a lease was taken
        self._closing = False
        self._lease_task: asyncio.Task[None] | None = None
        self._apply_task: asyncio.Task[None] | None = None

    @property
    def writing(self) -> int:
        """How many tenants this replica holds the lease of, now."""
        return sum(1 for tenant in list(self._held) if self.holds(tenant))

    def holds(self, tenant: str) -> bool:
        lease = self._held.get(tenant)
        return lease is not None and lease.valid_until > time.monotonic()

    def want(self, tenant: str) -> None:
        """This replica appended to the tenant: take its lease now if nobody holds it
        (a tenant another replica writes is left to the regular sweep)."""
        if tenant not in self._held and tenant not in self._elsewhere:
            self._wanted.add(tenant)
            self._poke.set()

    async def start(self) -> None:
        self._lease_task = asyncio.create_task(self._lease_loop(), name="memshadow-stream-lease")
        self._apply_task = asyncio.create_task(self._apply_loop(), name="memshadow-stream-apply")

    async def aclose(self) -> None:
        """Finish the batch in flight (for at most half a lease), then give the leases up
        so other replicas take the tenants over at once rather than after the TTL."""
        self._closing = True
        self._work.set()
        self._poke.set()
        # The loops stop on the flag: Python 3.11's wait_for can swallow a cancellation.
        tasks = {t for t in (self._apply_task, self._lease_task) if t is not None}
        _, late = await asyncio.wait(tasks, timeout=self._ttl_s / 2) if tasks else (set(), set())
        if late:
            log.warning("stream writer stopped mid-batch; its entries go to the next writer")
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for tenant in list(self._held):
            try:
                await self._queue.release(tenant, self._owner, idle_only=False)
            except StreamUnavailable:
                break  # the leases expire by themselves
        self._held.clear()

    # -- leases --------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        due = 0.0  # when the leases held are renewed and the waiting tenants swept
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), max(0.0, due - time.monotonic()))
            if self._closing:
                return
            self._poke.clear()
            sweep = time.monotonic() >= due
            try:
                await self._maintain(sweep)
            except StreamUnavailable as error:
                # Held leases lapse here by themselves (valid_until): nothing is written
                # without one. The stream logs the outage.
                log.debug("writer leases not renewed: %s", error)
            if sweep:
                due = time.monotonic() + self._renew_s

    async def _maintain(self, sweep: bool) -> None:
        """Try the wanted tenants; with ``sweep``, also renew the leases held and try
        every tenant with entries."""
        wanted, self._wanted = self._wanted, set()
        candidates = wanted - set(self._held)
        if sweep:
            candidates |= set(self._held) | set(await self._queue.waiting())
        if not candidates:
            return
        sent = time.monotonic()
        held = await self._queue.hold(sorted(candidates), self._owner, self._ttl_s)
        # A sweep tries every tenant with entries: what it could not take is all there is.
        self._elsewhere = candidates - held if sweep else self._elsewhere | (candidates - held)
        for tenant in (set(self._held) & candidates) - held:
            del self._held[tenant]
            log.info("writer lease of tenant %r lost to another replica", tenant)
        for tenant in held:
            lease = self._held.get(tenant)
            if lease is None:
                self._held[tenant] = _Lease(valid_until=sent + self._ttl_s / 2, active_at=sent)
                self._work.set()
                continue
            if lease.valid_until <= sent:
                lease.claim = True  # it lapsed meanwhile: another may have left entries
            lease.valid_until = sent + self._ttl_s / 2
        if sweep:
            await self._release_idle(sent)

    async def _release_idle(self, now: float) -> None:
        for tenant, lease in list(self._held.items()):
            if now - lease.active_at < self._idle_s or lease.claim:
                continue
            if await self._queue.release(tenant, self._owner, idle_only=True):
                del self._held[tenant]
            else:
                lease.active_at = now  # entries arrived: keep writing

    # -- applying ------------------------------------------------------------------------
    async def _apply_loop(self) -> None:
        while not self._closing:
            now = time.monotonic()
            ready = [
                t for t, lease in self._held.items()
                if lease.valid_until > now and lease.retry_at <= now
            ]  # fmt: skip
            if not ready:
                self._work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), self._renew_s)
                continue
            for tenant in [t for t in ready if self._held[t].claim]:
                await self._claim(tenant)
            fresh = [t for t in ready if t in self._held and not self._held[t].claim]
            if fresh:
                await self._read(fresh)

    async def _claim(self, tenant: str) -> None:
        try:
            entries = await self._queue.claim(tenant, self._owner, self._batch)
        except StreamUnavailable as error:
            self._failed(tenant, 0, error)
            return
        if entries:
            await self._apply({tenant: entries})
        elif tenant in self._held:
            self._held[tenant].claim = False

    async def _read(self, tenants: list[str]) -> None:
        try:
            entries = await self._queue.read(tenants, self._owner, self._batch, self._block_s)
        except StreamUnavailable:
            await asyncio.sleep(self._renew_s)  # the lease loop notices the outage too
            return
        by_tenant: dict[str, list[StreamEntry]] = {}
        for entry in entries:
            by_tenant.setdefault(entry.tenant, []).append(entry)
        if by_tenant:
            await self._apply(by_tenant)

    async def _apply(self, batches: dict[str, list[StreamEntry]]) -> None:
        """One embedding pass for every tenant's entries (one ``embed_batch``), then per
        tenant, its lease checked again, the write and the ack."""
        writes: dict[str, list[Write]] = {}
        for tenant, entries in batches.items():
            try:
                writes[tenant] = [w for entry in entries for w in decode_writes(entry.payload)]
            except ValueError as error:
                self._failed(tenant, len(entries), error)
        leases = {t: self._held[t] for t in writes if t in self._held}
        try:
            plan = await self._applier.prepare([w for t in leases for w in writes[t]])
        except Exception as error:  # whatever it was, the entries must not be dropped
            for tenant in leases:
                self._failed(tenant, len(batches[tenant]), error)
            return
        for tenant, lease in leases.items():
            await self._commit(tenant, lease, plan.of(tenant), batches[tenant])

    async def _commit(
        self, tenant: str, lease: _Lease, plan: Plan, entries: list[StreamEntry]
    ) -> None:
        if self._held.get(tenant) is not lease or lease.valid_until <= time.monotonic():
            # Lost or lapsed while embedding: the entries stay pending for the next holder.
            log.warning("writer lease of tenant %r lapsed while embedding; not writing", tenant)
            return
        try:
            await self._applier.commit(plan)
            await self._queue.ack(tenant, [entry.id for entry in entries])
        except Exception as error:  # StreamUnavailable too: retried, never dropped
            self._failed(tenant, len(entries), error)
            return
        lease.delay, lease.active_at = 0.1, time.monotonic()
        self._on_applied(tenant, entries[-1].id)
        log.debug(
            "applied %d memories of tenant %r as writer %s", plan.count, tenant, self._owner,
            extra={"tenant": tenant, "writer": self._owner, "count": plan.count},
        )  # fmt: skip

    def _failed(self, tenant: str, count: int, error: BaseException) -> None:
        """Acknowledged data is never dropped: the entries stay pending and are claimed
        again after a backoff, while this replica holds the lease."""
        lease = self._held.get(tenant)
        if lease is None:
            return
        log.error("applying %d stream entries of tenant %r failed, retrying in %.1fs: %r",
                  count, tenant, lease.delay, error)  # fmt: skip
        lease.claim = True
        lease.retry_at = time.monotonic() + lease.delay
        lease.delay = min(lease.delay * 2, _MAX_RETRY_S)
