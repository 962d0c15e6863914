"""The shared state of a single process: dictionaries, with Redis's expiry semantics."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from proxy.shared_state.base import GapHandler, MessageHandler

__all__ = ["InProcessState"]


class InProcessState:
    """:class:`proxy.shared_state.base.SharedState` for one process (the embedded default).

    Bounded like a Redis run with ``maxmemory-policy volatile-lru``: past ``max_keys``
    expiring keys the least recently used expiring key goes; keys without a TTL (the
    calibration totals) are never evicted. A single process has no peers, so a broadcast
    reaches nobody and a subscription never hears a message or a gap.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._max_keys = max_keys
        self._hashes: dict[str, dict[str, str]] = {}
        self._values: dict[str, bytes] = {}
        # Expiring keys, least recently used first, with their deadline (monotonic).
        self._expiry: OrderedDict[str, float] = OrderedDict()

    @property
    def healthy(self) -> bool:
        return True

    def _live(self, key: str) -> None:
        """Drop ``key`` if it has expired; otherwise mark it recently used."""
        deadline = self._expiry.get(key)
        if deadline is None:
            return
        if deadline <= time.monotonic():
            self._drop(key)
        else:
            self._expiry.move_to_end(key)

    def _drop(self, key: str) -> None:
        self._expiry.pop(key, None)
        self._hashes.pop(key, None)
        self._values.pop(key, None)

    def _expire(self, key: str, ttl_s: float | None) -> None:
        if ttl_s is None:
            return
        self._expiry[key] = time.monotonic() + ttl_s
        self._expiry.move_to_end(key)
        while len(self._expiry) > self._max_keys:
            oldest = next(iter(self._expiry))
            self._drop(oldest)

    async def claim(self, key: str, fields: Mapping[str, str], ttl_s: float | None) -> list[str]:
        self._live(key)
        stored = self._hashes.setdefault(key, {})
        won = [name for name in fields if name not in stored]
        stored.update((name, fields[name]) for name in won)
        self._expire(key, ttl_s)
        return won

    async def release(self, key: str, fields: Sequence[str]) -> None:
        self._live(key)
        stored = self._hashes.get(key, {})
        for name in fields:
            stored.pop(name, None)

    async def fields(self, key: str) -> dict[str, str]:
        self._live(key)
        return dict(self._hashes.get(key, {}))

    async def add(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        self._live(key)
        stored = self._hashes.setdefault(key, {})
        for name, delta in deltas.items():
            stored[name] = repr(float(stored.get(name, 0.0)) + delta)
        return {name: float(value) for name, value in stored.items()}

    async def swap(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        self._live(key)
        previous = self._values.get(key)
        self._values[key] = value
        self._expire(key, ttl_s)
        return previous

    async def get(self, key: str) -> bytes | None:
        self._live(key)
        return self._values.get(key)

    async def publish(self, channel: str, message: bytes) -> None:
        return None

    def subscribe(self, channel: str, on_message: MessageHandler, on_gap: GapHandler) -> None:
        return None
