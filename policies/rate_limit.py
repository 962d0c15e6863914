"""Requests per minute per tenant: a sliding-window estimate over two fixed windows.

Pure: counts in, a verdict out. The window that is running counts fully; the one before it
counts in proportion to how much of it still lies within the last ``window_s`` seconds
(Cloudflare's sliding-window approximation: no per-request log, two counters per tenant).
"""

from __future__ import annotations

import math

__all__ = ["retry_after", "window_of"]


def window_of(now: float, window_s: float) -> tuple[int, float]:
    """The index of the window ``now`` falls in, and the fraction of it already past."""
    index = math.floor(now / window_s)
    return index, now / window_s - index


def retry_after(
    limit: int, previous: float, current: float, elapsed: float, window_s: float
) -> float | None:
    """None if one more request fits under ``limit``; otherwise the seconds until it does.

    ``previous`` and ``current`` are the requests counted in the previous and the running
    window, ``elapsed`` the fraction of the running window already past.
    """
    room = limit - 1  # what the estimate may be before this request is added
    if previous * (1 - elapsed) + current <= room:
        return None
    if current <= room:
        # Room appears within this window, as the previous one's weight fades.
        fits_at = 1 - (room - current) / previous
        return (fits_at - elapsed) * window_s
    # Only in a later window: the running one becomes the previous and fades in turn.
    fits_at = 1 - room / current if current > 0 else 0.0
    return (1 - elapsed + max(0.0, fits_at)) * window_s
