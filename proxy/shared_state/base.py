"""The interface to the state that replicas share.

    SharedState (this Protocol)
    ├── InProcessState  (memory.py): one process, the embedded default, nothing to run
    └── RedisState      (redis.py):  N replicas behind a load balancer, one Redis

Each method is one Redis command or one pipelined round trip, so the two implementations
keep the same semantics: hashes of string fields (receipts and their credits, the capture
ledger, calibration totals, background responses), values (the last turn of a session,
what a chained response continues) and broadcast messages (cache invalidations). Keys given
here are relative; an implementation may prefix them. Every method may raise
:class:`proxy.errors.SharedStateUnavailable`. The chat path calls one before the request is
forwarded only to read what a chained Responses request continues (:mod:`proxy.chains`),
inside the recall deadline, where a failure costs the recall query that context and nothing
else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

__all__ = ["GapHandler", "MessageHandler", "SharedState"]

MessageHandler = Callable[[bytes], None]
# Called after a broken subscription is restored: messages sent meanwhile were missed.
GapHandler = Callable[[], None]


class SharedState(Protocol):
    """Atomic operations on shared hashes and values, and a broadcast to the other replicas."""

    @property
    def healthy(self) -> bool:
        """Whether the shared state answers and broadcasts reach this replica (no I/O)."""
        ...

    async def claim(self, key: str, fields: Mapping[str, str], ttl_s: float | None) -> list[str]:
        """Set each field not set yet (HSETNX); the ones this call set. Exactly one caller
        wins a field, however many replicas race for it."""
        ...

    async def release(self, key: str, fields: Sequence[str]) -> None:
        """Unset fields (HDEL): a claim whose work failed is given back."""
        ...

    async def fields(self, key: str) -> dict[str, str]:
        """Every field of the hash (HGETALL); empty when the key does not exist."""
        ...

    async def add(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        """Add to numeric fields (HINCRBYFLOAT) and return the whole hash, atomically:
        concurrent replicas never lose an update."""
        ...

    async def swap(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        """Set a value and return the one it replaced (SET … GET), atomically."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value set by :meth:`swap` (GET); None when unset or expired."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Tell every other replica (at most once; a replica that was cut off hears of the
        gap instead, through the subscriber's ``on_gap``)."""
        ...

    def subscribe(self, channel: str, on_message: MessageHandler, on_gap: GapHandler) -> None:
        """Call ``on_message`` with what other replicas publish on ``channel`` (never this
        replica's own messages), on the event loop."""
        ...
