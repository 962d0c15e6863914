"""Durable ingestion on one replica: a write-ahead log in front of the apply pipeline.

Durability. :meth:`Ingestor.submit` returns only after its memories are appended to the
WAL and ``fsync``-ed; concurrent submits share one ``fsync`` (group commit). Each WAL line is
``<crc32 hex> <json>``; a torn last line after a crash fails its checksum and is ignored
(it was never acknowledged). After applying a batch to the store the consumer records the
highest applied sequence number in ``applied`` (write, fsync, rename). At start, entries past
that number are replayed. Replays are idempotent: every entry carries its memory's id, and
the store upserts by id. Each start opens a fresh segment; segments wholly applied are
deleted. Ordering: one consumer applies entries in sequence order, in batches, through
:class:`memory.apply.BatchApplier` (embed, near-duplicates, supersession, write).
Redaction, chunking and exact-duplicate detection happen before the WAL, in
:mod:`memory.service`.

This is the embedded default, and with Redis the fallback of
:mod:`memory.stream_ingest` while the shared stream cannot be reached.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from memory.apply import BatchApplier, Write
from memory.model import Memory
from memory.store import Vectors

__all__ = ["Ingestion", "Ingestor", "WalEntry", "WriteAheadLog"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalEntry:
    """One memory to write. ``vector`` is set for restores that bring their own embedding."""

    seq: int
    tenant: str
    memory: Memory
    vector: list[float] | None = None
    restore: bool = False

    def to_line(self) -> str:
        body = json.dumps(
            {"seq": self.seq, "tenant": self.tenant, "memory": self.memory.model_dump(mode="json"),
             "vector": self.vector, "restore": self.restore},
            separators=(",", ":"),
        )  # fmt: skip
        return f"{zlib.crc32(body.encode()):08x} {body}\n"

    @classmethod
    def from_line(cls, line: str) -> WalEntry | None:
        crc, _, body = line.rstrip("\n").partition(" ")
        if not body or f"{zlib.crc32(body.encode()):08x}" != crc:
            return None
        data: dict[str, Any] = json.loads(body)
        memory = Memory.model_validate(data["memory"])
        return cls(data["seq"], data["tenant"], memory, data.get("vector"), data["restore"])


class WriteAheadLog:
    """Append-only, fsync-ed segments under ``directory``; blocking, call from a thread."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._next_seq = 1
        self._file: TextIO | None = None

    def open(self) -> list[WalEntry]:
        """Return the entries not yet applied and open a fresh segment for appends."""
        self._dir.mkdir(parents=True, exist_ok=True)
        applied = self.applied()
        pending: list[WalEntry] = []
        for segment in self._segments():
            with segment.open(encoding="utf-8") as handle:
                for line in handle:
                    entry = WalEntry.from_line(line)
                    if entry is None:
                        break  # a torn tail: nothing after it was acknowledged
                    self._next_seq = max(self._next_seq, entry.seq + 1)
                    if entry.seq > applied:
                        pending.append(entry)
        self._next_seq = max(self._next_seq, applied + 1)
        path = self._dir / f"wal-{self._next_seq:020d}.log"
        self._file = path.open("a", encoding="utf-8")
        _fsync_dir(self._dir)
        return pending

    def _segments(self) -> list[Path]:
        return sorted(self._dir.glob("wal-*.log"))

    def applied(self) -> int:
        marker = self._dir / "applied"
        return int(marker.read_text() or 0) if marker.exists() else 0

    def append(
        self, entries: Sequence[tuple[str, Memory, list[float] | None, bool]]
    ) -> list[WalEntry]:
        """Assign sequence numbers, write, flush and fsync; durable when this returns."""
        if self._file is None:
            raise RuntimeError("write-ahead log is not open")
        out = []
        for tenant, memory, vector, restore in entries:
            out.append(WalEntry(self._next_seq, tenant, memory, vector, restore))
            self._next_seq += 1
        self._file.write("".join(entry.to_line() for entry in out))
        self._file.flush()
        os.fsync(self._file.fileno())
        return out

    def mark_applied(self, seq: int) -> None:
        """Record progress atomically, then drop segments that hold only applied entries."""
        tmp = self._dir / "applied.tmp"
        with tmp.open("w") as handle:
            handle.write(str(seq))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._dir / "applied")
        segments = self._segments()
        for segment, following in itertools.pairwise(segments):
            # A segment ends where the next begins; the newest one is never removed.
            if int(following.stem.removeprefix("wal-")) - 1 <= seq:
                segment.unlink(missing_ok=True)

    def rotate(self) -> None:
        """Start a fresh segment and drop the ones wholly applied: after a forget, the
        acknowledged text must not linger in the current segment until the next start."""
        if self._file is None:
            raise RuntimeError("write-ahead log is not open")
        self._file.close()
        self._file = (self._dir / f"wal-{self._next_seq:020d}.log").open("a", encoding="utf-8")
        _fsync_dir(self._dir)
        self.mark_applied(self.applied())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ingestion(Protocol):
    """What :class:`memory.service.MemoryService` needs from an ingestion path: this
    module's :class:`Ingestor`, or :class:`memory.stream_ingest.StreamIngestor`."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors | None = None,
        *, restore: bool = False,
    ) -> None:  # fmt: skip
        """Durably enqueue memories; returns once they would survive a crash."""
        ...

    def pending(self, tenant: str, memory_id: str) -> Memory | None:
        """A memory acknowledged here and not applied yet."""
        ...

    def pending_by_hash(self, tenant: str, user: str, content_hash: str) -> Memory | None: ...

    @property
    def backlog(self) -> int:
        """Memories this replica acknowledged that are not in the store yet (as far as it
        knows: the operator dashboard shows it)."""
        ...

    async def flush(self, tenant: str | None = None, *, everywhere: bool = False) -> None:
        """Wait until what this replica acknowledged (of ``tenant``, or all) is applied;
        ``everywhere``: what any replica acknowledged before the call."""
        ...

    async def rotate_log(self) -> None:
        """Drop applied entries from this replica's own log (after a forget)."""
        ...


_Submit = tuple[list[tuple[str, Memory, list[float] | None, bool]], "asyncio.Future[None]"]


class Ingestor:
    """Owns the WAL and the consumer task; ``start()``/``aclose()`` from the app's lifespan."""

    def __init__(
        self,
        wal_dir: Path,
        applier: BatchApplier,
        *,
        batch_size: int = 128,
        max_delay_s: float = 0.02,
    ) -> None:
        self._wal = WriteAheadLog(wal_dir)
        self._applier = applier
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._commits: asyncio.Queue[_Submit | None] = asyncio.Queue()
        self._applies: asyncio.Queue[WalEntry | None] = asyncio.Queue()
        self._committed = 0
        self._applied = 0
        self._progress = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._wal_lock = asyncio.Lock()  # an append and a rotation never interleave
        self._closing = False
        self._replay_until = 0  # entries up to this seq may already be in the store
        # Acknowledged but not yet applied: visible to get() and exact-duplicate checks.
        self._pending: dict[str, Memory] = {}
        self._pending_hash: dict[tuple[str, str, str], Memory] = {}

    async def start(self) -> None:
        replay = await asyncio.to_thread(self._wal.open)
        self._applied = self._committed = self._wal.applied()
        self._replay_until = replay[-1].seq if replay else 0
        for entry in replay:
            self._committed = max(self._committed, entry.seq)
            self._track(entry.tenant, entry.memory)
            self._applies.put_nowait(entry)
        if replay:
            log.info("replaying %d acknowledged memories from the write-ahead log", len(replay))
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="memshadow-wal-commit"),
            asyncio.create_task(self._apply_loop(), name="memshadow-ingest-apply"),
        ]

    async def aclose(self) -> None:
        """Stop accepting, apply everything acknowledged, then close the log."""
        if self._closing:
            return
        self._closing = True
        await self._commits.put(None)
        await asyncio.gather(*self._tasks)
        await asyncio.to_thread(self._wal.close)

    async def submit(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors | None = None,
        *, restore: bool = False,
    ) -> None:  # fmt: skip
        """Durably enqueue memories; returns once they would survive a crash."""
        if self._closing or not self._tasks:
            raise RuntimeError("ingestion is not running")
        rows = [None if vectors is None else vectors[i].tolist() for i in range(len(memories))]
        for memory in memories:
            self._track(tenant, memory)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._commits.put(
            ([(tenant, m, v, restore) for m, v in zip(memories, rows, strict=True)], future)
        )
        await future

    def _track(self, tenant: str, memory: Memory) -> None:
        self._pending[f"{tenant}\x00{memory.id}"] = memory
        self._pending_hash[(tenant, memory.user, memory.content_hash)] = memory

    def _untrack(self, tenant: str, memory: Memory) -> None:
        self._pending.pop(f"{tenant}\x00{memory.id}", None)
        key = (tenant, memory.user, memory.content_hash)
        if self._pending_hash.get(key) is memory:
            del self._pending_hash[key]

    def pending(self, tenant: str, memory_id: str) -> Memory | None:
        """An acknowledged memory that the consumer has not written yet."""
        return self._pending.get(f"{tenant}\x00{memory_id}")

    def pending_by_hash(self, tenant: str, user: str, content_hash: str) -> Memory | None:
        return self._pending_hash.get((tenant, user, content_hash))

    @property
    def backlog(self) -> int:
        """Memories acknowledged (durable in the write-ahead log) but not yet in the store."""
        return self._committed - self._applied

    async def flush(self, tenant: str | None = None, *, everywhere: bool = False) -> None:
        """Wait until everything acknowledged so far is applied to the store (on one
        replica, what it acknowledged is everything: the arguments change nothing)."""
        target = self._committed
        async with self._progress:
            await self._progress.wait_for(lambda: self._applied >= target)

    async def rotate_log(self) -> None:
        """Apply what was acknowledged, then move the log to a fresh segment (see
        :meth:`WriteAheadLog.rotate`)."""
        await self.flush()
        async with self._wal_lock:
            await asyncio.to_thread(self._wal.rotate)

    async def _commit_loop(self) -> None:
        while True:
            first = await self._commits.get()
            group = [first]
            while not self._commits.empty():
                group.append(self._commits.get_nowait())
            work = [item for item in group if item is not None]
            if work:
                await self._commit(work)
            if len(work) != len(group):
                await self._applies.put(None)
                return

    async def _commit(self, work: list[_Submit]) -> None:
        rows = [row for batch, _ in work for row in batch]
        try:
            async with self._wal_lock:
                entries = await asyncio.to_thread(self._wal.append, rows)
        except OSError as error:
            for batch, future in work:
                for tenant, memory, _, _ in batch:
                    self._untrack(tenant, memory)
                future.set_exception(error)
            return
        self._committed = entries[-1].seq if entries else self._committed
        for entry in entries:
            self._applies.put_nowait(entry)
        for _, future in work:
            if not future.done():
                future.set_result(None)

    async def _apply_loop(self) -> None:
        while True:
            first = await self._applies.get()
            if first is None:
                return
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self._max_delay_s
            stop = False
            while len(batch) < self._batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    entry = await asyncio.wait_for(self._applies.get(), max(timeout, 0))
                except TimeoutError:
                    break
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            await self._apply_with_retry(batch)
            if stop:
                return

    async def _apply_with_retry(self, batch: list[WalEntry]) -> None:
        delay = 0.1
        first_attempt = True
        while True:
            try:
                await self._apply(batch, first_attempt)
                break
            except (OSError, RuntimeError, ValueError) as error:
                # Acknowledged data must not be dropped: keep retrying (it is in the WAL).
                log.error(
                    "applying %d memories failed, retrying in %.1fs: %s", len(batch), delay, error
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                first_attempt = False  # part of the batch may be stored: upsert from now on
        await asyncio.to_thread(self._wal.mark_applied, batch[-1].seq)
        for entry in batch:
            self._untrack(entry.tenant, entry.memory)
        async with self._progress:
            self._applied = batch[-1].seq
            self._progress.notify_all()

    async def _apply(self, batch: list[WalEntry], first_attempt: bool) -> None:
        # Fresh ids can be appended; a replayed or restored entry may already be stored.
        await self._applier.apply([
            Write(e.tenant, e.memory, e.vector, e.restore,
                  fresh=first_attempt and e.seq > self._replay_until)
            for e in batch
        ])  # fmt: skip
