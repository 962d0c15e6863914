"""Calibration maths on known data."""

from __future__ import annotations

import math
import random

import pytest

from policies.calibration import (
    MIN_OUTCOMES_TO_ADAPT,
    Calibration,
    adapted_threshold,
    auroc,
    calibrated,
    expected_calibration_error,
    observe,
    reliability,
)


def _feed(pairs: list[tuple[float, bool]]) -> Calibration:
    calibration = Calibration()
    for confidence, useful in pairs:
        calibration = observe(calibration, confidence, useful)
    return calibration


def test_a_perfectly_calibrated_source_has_near_zero_ece() -> None:
    rng = random.Random(7)
    pairs = []
    for _ in range(20_000):
        c = rng.random()
        pairs.append((c, rng.random() < c))
    assert expected_calibration_error(_feed(pairs)) < 0.02


def test_an_overconfident_source_has_a_large_ece_and_calibration_corrects_it() -> None:
    pairs = [(0.95, i % 2 == 0) for i in range(1000)]  # says 0.95, right half the time
    calibration = _feed(pairs)
    assert expected_calibration_error(calibration) == pytest.approx(0.45, abs=1e-6)
    assert calibrated(calibration, 0.95) == pytest.approx(0.5, abs=0.01)
    rows = reliability(calibration)
    assert rows[9]["count"] == 1000 and rows[9]["useful_rate"] == 0.5


def test_little_evidence_barely_moves_the_estimate() -> None:
    calibration = observe(Calibration(), 0.8, False)
    assert calibrated(calibration, 0.8) == pytest.approx((0 + 5 * 0.8) / 6)


def test_threshold_moves_to_reach_the_target_precision() -> None:
    pairs = [(c / 10 + 0.05, c >= 6) for c in range(10) for _ in range(10)]
    calibration = _feed(pairs)
    assert adapted_threshold(calibration, target_precision=0.9, current=0.2) == pytest.approx(0.6)
    few = _feed(pairs[: MIN_OUTCOMES_TO_ADAPT - 1])
    assert adapted_threshold(few, target_precision=0.9, current=0.2) == 0.2


def test_a_tenant_whose_injections_mostly_help_keeps_its_threshold() -> None:
    # 90% useful overall: every edge meets a 0.7 target, yet the bins under the configured
    # threshold hold nothing the tenant was ever shown. The floor stands.
    pairs = [(0.9, i % 10 != 0) for i in range(100)]
    assert adapted_threshold(_feed(pairs), target_precision=0.7, current=0.2) == 0.2
    assert adapted_threshold(_feed(pairs), target_precision=0.95, current=0.2) == 0.9


def test_weak_signals_count_fractionally() -> None:
    calibration = observe(Calibration(), 0.55, True, weight=0.3)
    assert calibration.outcomes == pytest.approx(0.3)


def test_auroc() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert auroc([0.9, 0.1], [True, False]) == 1.0
    assert math.isnan(auroc([0.3], [True]))
