"""Cached scopes out of the cyclic garbage collector's sight.

A cached scope keeps about 3.6 objects the collector tracks per memory (the ``Memory`` model,
its ``__dict__``, its set of fields, its metadata). CPython's full collections traverse every
tracked object, on whichever thread happens to allocate (often the event loop, so every
request in flight waits): on this 2-core box one took ~25 ms with a 10k-memory scope cached
and ~260 ms with 100k, and the store caches up to 2M rows. In the proxy under load with one
10k scope they came every few seconds, 40-120 ms each (``bench/overhead.py``'s server).

``gc.freeze()`` moves every live object into a permanent generation that collections skip;
reference counting still frees them, and a scope holds no reference cycle, so an evicted or
forgotten scope is freed at once. What freezing must not do is keep cyclic garbage until
shutdown, so a full collection runs first, in the writer lane that added the rows: it
traverses only what is not frozen yet (what was allocated since the previous settle), once.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["SETTLE_ROWS", "LongLived"]

# Rows added to cached scopes between two settles. A settle costs one collection of what
# is not frozen (about the collection it saves); below a few thousand rows the scopes add
# little to a collection's work.
SETTLE_ROWS = 5_000


class LongLived:
    """Counts rows added to cached scopes and settles them once ``every_rows`` are in."""

    def __init__(self, every_rows: int | None = SETTLE_ROWS) -> None:
        self._every_rows = every_rows
        self._pending = 0
        self._lock = threading.Lock()

    def added(self, rows: int) -> None:
        """``rows`` memories were added to cached scopes (loaded or upserted)."""
        if self._every_rows is None or rows <= 0:
            return
        with self._lock:
            self._pending += rows
            if self._pending < self._every_rows:
                return
            self._pending = 0
        gc.collect()
        gc.freeze()
