"""The sliding-window estimate behind per-tenant request limits."""

from __future__ import annotations

import pytest

from policies.rate_limit import retry_after, window_of


def test_windows_are_numbered_with_the_fraction_past() -> None:
    assert window_of(125.0, 60.0) == (2, pytest.approx(5 / 60))


def test_requests_under_the_limit_pass() -> None:
    assert retry_after(10, previous=0, current=9, elapsed=0.5, window_s=60) is None
    # Half of the previous window still counts: 8 * 0.5 + 5 = 9 leaves room for one.
    assert retry_after(10, previous=8, current=5, elapsed=0.5, window_s=60) is None


def test_a_full_previous_window_fades_within_the_running_one() -> None:
    # 10 * (1 - 0.25) + 2 = 9.5 > 9: wait until 10 * (1 - f) + 2 <= 9, f = 0.3.
    wait = retry_after(10, previous=10, current=2, elapsed=0.25, window_s=60)
    assert wait == pytest.approx(0.05 * 60)


def test_a_full_running_window_waits_for_the_next_one() -> None:
    # 10 in the running window: at the next one they weigh 10 * (1 - g) <= 9, g = 0.1.
    wait = retry_after(10, previous=0, current=10, elapsed=0.5, window_s=60)
    assert wait == pytest.approx((0.5 + 0.1) * 60)
    assert retry_after(1, previous=0, current=1, elapsed=0.0, window_s=60) == pytest.approx(120)
