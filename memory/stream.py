"""The shared ingestion stream: what the memory engine needs from it, and what it carries.

Replicas that share one store acknowledge a store once it is appended to a durable log
they all read (Redis Streams in the proxy, :mod:`proxy.ingest_stream`), and exactly one
replica at a time, the holder of the tenant's *writer lease*, applies a tenant's entries to
its table. The interface is two small Protocols on one object:

- :class:`IngestLog`, the producer's side: append a tenant's entry; read the tenant's
  positions (the newest entry, and the *applied position* its writer publishes after each
  batch is committed) to wait for what was acknowledged;
- :class:`WriterQueue`, the writer's side: hold (take or renew) leases, find tenants with
  entries, read new entries, claim the entries a previous holder left unacknowledged, ack
  what is committed, release a lease.

Entry ids are the stream's ``(milliseconds, sequence)`` pairs, ordered as tuples. Every
operation may raise :class:`StreamUnavailable`. The payload of an entry is one submit's
memories, encoded by :func:`encode_writes`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from memory.apply import Write
from memory.model import Memory

__all__ = [
    "IngestBehind",
    "IngestLog",
    "IngestStream",
    "Position",
    "StreamEntry",
    "StreamId",
    "StreamUnavailable",
    "WriterQueue",
    "decode_writes",
    "encode_writes",
    "format_id",
    "parse_id",
]

StreamId = tuple[int, int]
_FORMAT = 1


class StreamUnavailable(ConnectionError):
    """The stream could not be reached (or answered with an error)."""


class IngestBehind(RuntimeError):
    """Acknowledged memories that an operation must see are not applied within its wait:
    the tenant's writer is failing over, behind, or the stream is unreachable."""


def parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(entry_id: StreamId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One appended entry, as the writer reads it."""

    tenant: str
    id: StreamId
    payload: bytes


@dataclass(frozen=True, slots=True)
class Position:
    """Where a tenant's stream stands. ``applied``: every entry up to it is committed to
    the table (None: nothing applied since the stream began). ``head``: the newest entry
    still in the stream (None: none; applied entries are trimmed). ``exists`` is False when
    the stream is gone altogether (Redis lost its data)."""

    applied: StreamId | None
    head: StreamId | None
    exists: bool = True

    def covers(self, entry_id: StreamId) -> bool:
        """Whether waiting for ``entry_id`` is over: applied, or gone with the stream."""
        return not self.exists or (self.applied is not None and self.applied >= entry_id)


class IngestLog(Protocol):
    """The producer's side of the stream."""

    async def append(self, tenant: str, payload: bytes) -> StreamId:
        """Append durably (as durable as the stream is configured to be); the entry's id."""
        ...

    async def positions(self, tenants: Sequence[str]) -> dict[str, Position]:
        """Each tenant's :class:`Position`, in one round trip."""
        ...


class WriterQueue(Protocol):
    """The writer's side: leases, reading, acknowledging."""

    async def hold(self, tenants: Sequence[str], owner: str, ttl_s: float) -> set[str]:
        """Take each lease that is free, renew each that ``owner`` holds, for ``ttl_s``;
        the tenants whose lease ``owner`` holds now."""
        ...

    async def release(self, tenant: str, owner: str, *, idle_only: bool) -> bool:
        """Give the lease up if ``owner`` holds it (with ``idle_only``, only when every
        entry is applied, atomically with appends, so none is left without a writer)."""
        ...

    async def waiting(self) -> list[str]:
        """Tenants whose streams may hold entries to apply (held by a writer or not)."""
        ...

    async def read(
        self, tenants: Sequence[str], owner: str, count: int, block_s: float
    ) -> list[StreamEntry]:
        """Entries never delivered before, oldest first, up to ``count`` per tenant;
        waits up to ``block_s`` for one. They stay pending for ``owner`` until acked."""
        ...

    async def claim(self, tenant: str, owner: str, count: int) -> list[StreamEntry]:
        """The oldest entries delivered but never acked (to any holder), now ``owner``'s."""
        ...

    async def ack(self, tenant: str, ids: Sequence[StreamId]) -> None:
        """The entries are committed: ack them, trim them, publish the applied position."""
        ...


class IngestStream(IngestLog, WriterQueue, Protocol):
    """Both sides, as one replica uses them."""


def encode_writes(tenant: str, writes: Sequence[Write]) -> bytes:
    """One entry's payload: the tenant's memories (vectors, when given, as float32)."""
    rows = [
        {
            "memory": w.memory.model_dump(mode="json"),
            "vector": None
            if w.vector is None
            else base64.b64encode(np.asarray(w.vector, np.float32).tobytes()).decode(),
            "restore": w.restore,
        }
        for w in writes
    ]
    return orjson.dumps({"v": _FORMAT, "tenant": tenant, "rows": rows})


def decode_writes(payload: bytes) -> list[Write]:
    """The writes of one entry; raises ``ValueError`` on a payload it cannot read. They
    are never ``fresh``: an entry may have been applied before (a writer died before its
    ack), so it is always upserted."""
    body: dict[str, Any] = orjson.loads(payload)
    if not isinstance(body, dict) or body.get("v") != _FORMAT:
        raise ValueError("ingestion stream entry of an unknown format")
    try:
        tenant = str(body["tenant"])
        return [
            Write(tenant, Memory.model_validate(row["memory"]), _vector(row["vector"]),
                  bool(row["restore"]))
            for row in body["rows"]
        ]  # fmt: skip
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed ingestion stream entry: {error!r}") from None


def _vector(raw: str | None) -> list[float] | None:
    if raw is None:
        return None
    values: list[float] = np.frombuffer(base64.b64decode(raw), np.float32).tolist()
    return values
