"""Ingestion for replicas that share one store: a shared durable stream, one writer per tenant.

Design. A store is acknowledged once its entry is appended to the tenant's stream (Redis
Streams, :mod:`proxy.ingest_stream`); from then on it no longer depends on the replica that
took it. Each tenant's stream is applied by exactly one replica at a time, the holder of
the tenant's writer lease (a Redis key set with ``NX`` and a TTL, renewed while held): it
reads the entries through a consumer group, applies them in order and in batches through
the same pipeline as the local write-ahead log (:class:`memory.apply.BatchApplier`), and
acks them only after the table write committed (:mod:`memory.stream_writer`). When a
holder dies its lease expires; the replica that takes it next first claims the entries the
dead one had read but not acked, and re-applies them: rows are upserted by id, so an
entry applied twice is still one row. One stream per tenant rather than a few shared
shards because a tenant is the unit of a table and of a lease: a lease per table is what
"one writer per table" means, a tenant's position in its own stream is what its readers
wait for, and nothing else is needed to spread tenants over replicas (the replica that
appends to a tenant nobody writes takes its lease).

Read-your-writes. The writer publishes each tenant's *applied position* (the newest entry
committed). This replica remembers the entries it appended until the position passes
them: :meth:`StreamIngestor.pending` and the exact-duplicate check see them meanwhile, and
:meth:`StreamIngestor.flush` waits for them (with ``everywhere``, for the stream's newest
entry: what any replica acknowledged), for at most ``wait_s``, then raises
:class:`memory.stream.IngestBehind`.

Fallback. When the stream cannot be reached at store time the memories go to this
replica's write-ahead log instead (still durable, acknowledged, and applied by this replica
as on one machine), logged once per outage and counted through ``on_fallback``; the next
store tries the stream again. Exact duplicates acknowledged by two replicas before either
was applied are caught by the writer's near-duplicate check (similarity 1) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memory.apply import BatchApplier, Write
from memory.ingest import Ingestor
from memory.model import Memory
from memory.store import Vectors
from memory.stream import (
    IngestBehind,
    IngestStream,
    Position,
    StreamId,
    StreamUnavailable,
    encode_writes,
    format_id,
)
from memory.stream_writer import StreamWriter

__all__ = ["StreamConfig", "StreamIngestor", "replica_name"]

log = logging.getLogger(__name__)
_POLL_S = 0.01


def replica_name() -> str:
    """Who holds a lease, readable in Redis: host, process, and a nonce for restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How a replica uses the shared stream: ``lease_ttl_s`` of a tenant's writer lease,
    ``wait_s`` for read-your-writes, ``on_fallback(count)`` for each store that went to
    the local write-ahead log instead."""

    stream: IngestStream
    lease_ttl_s: float = 5.0
    wait_s: float = 10.0
    on_fallback: Callable[[int], None] | None = None


class StreamIngestor:
    """:class:`memory.ingest.Ingestion` through the shared stream, with ``local`` (this
    replica's write-ahead log) as the fallback while the stream is unreachable."""

    def __init__(self, config: StreamConfig, local: Ingestor, applier: BatchApplier) -> None:
        self._stream = config.stream
        self._local = local
        self._wait_s = config.wait_s
        self._on_fallback = config.on_fallback
        self.writer = StreamWriter(
            config.stream, applier, owner=replica_name(), lease_ttl_s=config.lease_ttl_s,
            on_applied=self._advance,
        )  # fmt: skip
        # Appended here and not known to be applied: tenant -> entry id -> its memories.
        self._acked: dict[str, dict[StreamId, list[Memory]]] = {}
        self._by_id: dict[tuple[str, str], Memory] = {}
        self._by_hash: dict[tuple[str, str, str], Memory] = {}
        self._applied: dict[str, StreamId] = {}  # the newest applied position heard of
        self._barriers: dict[str, StreamId] = {}  # entries someone waits for, not appended here
        self._changed = asyncio.Event()  # replaced after every advance: waiters re-check
        self._outstanding = asyncio.Event()  # the watcher has something to poll
        self._falling_back = False
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._local.start()  # replays what was acknowledged here during an outage
        await self.writer.start()
        self._watcher = asyncio.create_task(self._watch(), name="memshadow-stream-watch")

    async def aclose(self) -> None:
        """Stop accepting; the writer finishes its batch and gives its leases up. What
        was appended and not applied stays in the stream, for whichever replica takes
        the tenant next."""
        if self._closing:
            return
        self._closing = True
        await self.writer.aclose()
        if self._watcher is not None:
            self._outstanding.set()
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self._local.aclose()

    # -- storing ---------------------------------------------------------------------------
    async def submit(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors | None = None,
        *, restore: bool = False,
    ) -> None:  # fmt: skip
        """Durable when this returns: in the stream, or (stream unreachable) in the WAL."""
        if self._closing:
            raise RuntimeError("ingestion is not running")
        if not memories:
            return
        rows = [None if vectors is None else vectors[i].tolist() for i in range(len(memories))]
        writes = [Write(tenant, m, v, restore) for m, v in zip(memories, rows, strict=True)]
        self._track(tenant, memories)  # seen by concurrent duplicates during the append
        try:
            entry_id = await self._stream.append(tenant, encode_writes(tenant, writes))
        except StreamUnavailable as error:
            self._untrack(tenant, memories)
            self._fall_back(error, len(memories))
            await self._local.submit(tenant, memories, vectors, restore=restore)
            return
        except BaseException:
            self._untrack(tenant, memories)  # not acknowledged (cancelled, say)
            raise
        if self._falling_back:
            self._falling_back = False
            log.info("ingestion stream is back: stores are acknowledged in it again")
        if self._applied.get(tenant, (0, 0)) >= entry_id:
            self._untrack(tenant, memories)  # its writer was quicker than this reply
        else:
            self._acked.setdefault(tenant, {})[entry_id] = list(memories)
            self._outstanding.set()
        self.writer.want(tenant)

    def _fall_back(self, error: BaseException, count: int) -> None:
        if not self._falling_back:
            self._falling_back = True
            log.warning(
                "ingestion stream unavailable: stores are acknowledged in this replica's"
                " write-ahead log and applied here until it is back: %s", error,
            )  # fmt: skip
        if self._on_fallback is not None:
            self._on_fallback(count)

    def _track(self, tenant: str, memories: Sequence[Memory]) -> None:
        for memory in memories:
            self._by_id[(tenant, memory.id)] = memory
            self._by_hash[(tenant, memory.user, memory.content_hash)] = memory

    def _untrack(self, tenant: str, memories: Sequence[Memory]) -> None:
        for memory in memories:
            self._by_id.pop((tenant, memory.id), None)
            key = (tenant, memory.user, memory.content_hash)
            if self._by_hash.get(key) is memory:
                del self._by_hash[key]

    def pending(self, tenant: str, memory_id: str) -> Memory | None:
        return self._by_id.get((tenant, memory_id)) or self._local.pending(tenant, memory_id)

    def pending_by_hash(self, tenant: str, user: str, content_hash: str) -> Memory | None:
        return self._by_hash.get((tenant, user, content_hash)) or self._local.pending_by_hash(
            tenant, user, content_hash
        )

    @property
    def backlog(self) -> int:
        """Appended here and not yet heard applied, plus the local log's during an outage."""
        appended = sum(len(m) for entries in self._acked.values() for m in entries.values())
        return appended + self._local.backlog

    async def rotate_log(self) -> None:
        await self._local.rotate_log()

    # -- waiting for what was acknowledged ---------------------------------------------------
    async def flush(self, tenant: str | None = None, *, everywhere: bool = False) -> None:
        """Wait until what this replica acknowledged (of ``tenant``, or of every tenant) is
        applied; ``everywhere``: every entry in the tenant's stream now, whoever appended
        it. Raises :class:`IngestBehind` after ``wait_s``."""
        await self._local.flush()
        tenants = [tenant] if tenant is not None else list(self._acked)
        targets = {t: max(self._acked[t]) for t in tenants if self._acked.get(t)}
        if everywhere and tenant is not None:
            head = await self._head(tenant, waiting=tenant in targets)
            if head is not None:
                targets[tenant] = max(targets.get(tenant, head), head)
                self._barriers[tenant] = max(self._barriers.get(tenant, head), head)
                self._outstanding.set()
        deadline = time.monotonic() + self._wait_s
        for t, target in targets.items():
            while self._applied.get(t, (0, 0)) < target:
                changed = self._changed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IngestBehind(
                        f"memories of tenant {t!r} acknowledged up to stream entry"
                        f" {format_id(target)} are not applied after {self._wait_s:g}s"
                        " (its writer is failing over or behind, or Redis is unreachable);"
                        " retry shortly"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)

    async def _head(self, tenant: str, *, waiting: bool) -> StreamId | None:
        """The tenant's newest unapplied entry; None when there is none to wait for."""
        try:
            position = (await self._stream.positions([tenant]))[tenant]
        except StreamUnavailable as error:
            if waiting:
                return None  # this replica's own entries are waited for all the same
            # What other replicas acknowledged cannot be seen: proceed with what is known.
            log.warning("tenant %r: ingestion stream unreachable, not waiting for other"
                        " replicas' stores: %s", tenant, error)  # fmt: skip
            return None
        self._advance_position(tenant, position)
        if position.head is None or position.covers(position.head):
            return None
        return position.head

    def _advance(self, tenant: str, applied: StreamId) -> None:
        """The tenant is applied up to ``applied`` (this replica's writer, or the watcher)."""
        if applied > self._applied.get(tenant, (0, 0)):
            self._applied[tenant] = applied
        known = self._applied[tenant]
        done = [entry_id for entry_id in self._acked.get(tenant, {}) if entry_id <= known]
        for entry_id in done:
            self._untrack(tenant, self._acked[tenant].pop(entry_id))
        if not self._acked.get(tenant):
            self._acked.pop(tenant, None)
        if self._barriers.get(tenant, (0, 0)) <= known:
            self._barriers.pop(tenant, None)
        self._changed.set()
        self._changed = asyncio.Event()

    def _advance_position(self, tenant: str, position: Position) -> None:
        if position.exists:
            if position.applied is not None:
                self._advance(tenant, position.applied)
            return
        # The stream is gone (Redis lost its data): nothing of it will ever be applied.
        waited = list(self._acked.get(tenant, {}))
        if tenant in self._barriers:
            waited.append(self._barriers[tenant])
        if waited:
            lost = sum(len(m) for m in self._acked.get(tenant, {}).values())
            if lost:
                log.error("%d memories of tenant %r acknowledged through the ingestion stream"
                          " are no longer in it: Redis lost them", lost, tenant)  # fmt: skip
            self._advance(tenant, max(waited))

    async def _watch(self) -> None:
        """While anything is outstanding, poll the positions of the tenants concerned."""
        while not self._closing:
            tenants = sorted(set(self._acked) | set(self._barriers))
            if not tenants:
                self._outstanding.clear()
                await self._outstanding.wait()
                continue
            try:
                positions = await self._stream.positions(tenants)
            except StreamUnavailable:
                await asyncio.sleep(0.2)  # the stream logs the outage
                continue
            for tenant, position in positions.items():
                self._advance_position(tenant, position)
            await asyncio.sleep(_POLL_S)
