"""At most one log line per key per interval, counting the lines it held back.

Under overload every request that sheds memory has the same story to tell; one warning per
request (hundreds a second) buries everything else in the log without saying more. The
metric counts every occurrence; the log keeps the first of each kind and then one line per
interval with how many were folded into it.

Hand-written rather than a dependency: a dict and a clock, and logging's own filters have
no notion of "how many were suppressed".
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["LogThrottle"]


class LogThrottle:
    """Decides which occurrences of a repeated event get a log line."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def admit(self, key: Hashable, now: float) -> int | None:
        """None to stay silent; else log now, saying how many were held back since the last
        line of this key (0 for the first). ``now`` is a monotonic clock in seconds."""
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
