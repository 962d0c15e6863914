"""How many recalls may run at once: an adaptive limit (additive increase, multiplicative decrease).

Recall is CPU work on a small thread pool. Past the pool's capacity extra recalls only queue
behind each other, and once the queue is longer than the deadline allows, *every* recall misses
it while its work is still paid for: under load a fixed cap of 16 left 99% of requests
degraded. The right limit depends on the machine, the scope sizes and the load, so it is
learnt the way TCP learns a congestion window: it grows by about one per limit's worth of
recalls that finish well inside their deadline, and halves when one misses it (at most once
per deadline, since the recalls queued behind a miss miss it for the same reason). Requests
past the limit skip memory at once (``degraded: overload``) instead of waiting to miss.

Hand-written rather than a dependency: the algorithm is a dozen lines, and the maintained
Python packages for it are tied to gRPC or to a web framework's middleware.
"""

from __future__ import annotations

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

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def inflight(self) -> int:
        return self._inflight

    def try_acquire(self) -> bool:
        if self._inflight >= int(self._limit):
            return False
        self._inflight += 1
        return True

    def release(self, seconds: float, deadline_s: float, now: float) -> None:
        """One admitted recall finished after ``seconds``; ``now`` is a monotonic clock."""
        self._inflight -= 1
        if seconds > deadline_s:
            if now - self._last_decrease >= deadline_s:
                self._limit = max(self._floor, self._limit * _DECREASE_FACTOR)
                self._last_decrease = now
        elif seconds < deadline_s * _COMFORTABLE_SHARE:
            self._limit = min(self._ceiling, self._limit + 1.0 / self._limit)
