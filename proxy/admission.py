"""How many recalls may run at once: an adaptive limit (additive increase, multiplicative decrease).

Recall is CPU work on a small thread pool. Past the pool's capacity extra recalls only queue
behind each other, and once the queue is longer than the deadline allows, *every* recall misses
it while its work is still paid for: under load a fixed cap of 16 left 99% of requests
degraded. The right limit depends on the machine, the scope sizes and the load, so it is
learnt the way TCP learns a congestion window: it grows by about one per limit's worth of
recalls that finish well inside their deadline, and halves when one misses it (at most once
per deadline, since the recalls queued behind a miss miss it for the same reason).

A request past the limit waits for a slot, first come first served, but never past its own
deadline: then it skips memory (``degraded: overload``). Waiting here rather than in the
thread pool's queue means a recall whose request has given up never starts, so no CPU goes to
answers nobody reads, and callers are slowed to the pace memory can serve instead of being
sent around faster without it.

Hand-written rather than a dependency: the algorithm is a dozen lines, and the maintained
Python packages for it are tied to gRPC or to a web framework's middleware.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

# A recall that took less than this share of its deadline leaves room for one more in flight.
_COMFORTABLE_SHARE = 0.5
_DECREASE_FACTOR = 0.5


class RecallAdmission:
    """Admits recalls while fewer than ``limit`` are in flight; the limit adapts to outcomes."""

    def __init__(self, ceiling: int, floor: int = 1) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor} ceiling={ceiling}")
        self._ceiling = float(ceiling)
        self._floor = float(floor)
        self._limit = float(ceiling)
        self._inflight = 0
        self._last_decrease = float("-inf")
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """A slot now, or False; never jumps the queue of waiting requests."""
        if self._waiters or self._inflight >= int(self._limit):
            return False
        self._inflight += 1
        return True

    async def acquire(self, timeout_s: float) -> bool:
        """A slot within ``timeout_s``, or False (and no slot held)."""
        if self.try_acquire():
            return True
        if timeout_s <= 0:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        granted = False
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
            granted = True
        except TimeoutError:
            pass
        finally:
            if granted:
                pass  # the slot is the caller's until release()
            elif waiter.done() and not waiter.cancelled():
                # Granted just as the time ran out or the request was cancelled: pass it on.
                self._inflight -= 1
                self._grant()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return granted

    def release(self, seconds: float, deadline_s: float, now: float) -> None:
        """An admitted recall ran for ``seconds`` after its slot; ``now`` is a monotonic clock."""
        self._inflight -= 1
        if seconds > deadline_s:
            if now - self._last_decrease >= deadline_s:
                self._limit = max(self._floor, self._limit * _DECREASE_FACTOR)
                self._last_decrease = now
        elif seconds < deadline_s * _COMFORTABLE_SHARE:
            self._limit = min(self._ceiling, self._limit + 1.0 / self._limit)
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._inflight < int(self._limit):
            waiter = self._waiters.popleft()
            if not waiter.done():  # skip those who gave up
                self._inflight += 1
                waiter.set_result(None)
