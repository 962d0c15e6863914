from __future__ import annotations

import pytest

from policies.retention import DEFAULT_RETENTION, TierRetention, decay, over_cap


def test_decay_halves_each_half_life() -> None:
    tier = TierRetention(half_life_s=100.0)
    assert decay(0, tier) == 1.0
    assert decay(100, tier) == pytest.approx(0.5)
    assert decay(200, tier) == pytest.approx(0.25)


def test_decay_keeps_floor_and_treats_future_as_new() -> None:
    tier = TierRetention(half_life_s=10.0, floor=0.3)
    assert decay(1e9, tier) == pytest.approx(0.3)
    assert decay(-50, tier) == 1.0


def test_tiers_fade_in_the_documented_order() -> None:
    week = 7 * 24 * 3600.0
    weights = [
        decay(week, DEFAULT_RETENTION.for_tier(t))
        for t in ("working", "episodic", "semantic", "long_term")
    ]
    assert weights == sorted(weights)
    assert weights[0] < 0.01 and weights[-1] > 0.95
    assert DEFAULT_RETENTION.for_tier("unknown") == DEFAULT_RETENTION.default


def test_over_cap() -> None:
    assert over_cap(10, TierRetention(1.0, cap=8)) == 2
    assert over_cap(5, TierRetention(1.0, cap=8)) == 0
    assert over_cap(10**9, TierRetention(1.0)) == 0
