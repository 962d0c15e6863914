"""Calibrating confidence against outcomes, and adapting each tenant's abstention threshold.

Pure maths over outcome counts. Confidence is bucketed into equal-width reliability bins;
each bin keeps how many injections at that confidence turned out useful. From the bins:

- the calibrated confidence of a raw score (the bin's observed rate, shrunk towards the raw
  score while the bin has little evidence, so early feedback cannot swing it wildly);
- the expected calibration error, ECE = Σ (n_b / N) · |rate_b - mean confidence_b|;
- the threshold: the lowest confidence above which injections reach the target precision
  (never under the configured one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

BINS = 10
# Pseudo-observations that pull a bin's rate towards its raw confidence until real
# outcomes outweigh them: with 5, a bin needs a handful of outcomes before it moves far.
PRIOR_WEIGHT = 5.0
MIN_OUTCOMES_TO_ADAPT = 30


def bin_of(confidence: float, bins: int = BINS) -> int:
    return min(bins - 1, max(0, int(confidence * bins)))


@dataclass(frozen=True, slots=True)
class Bin:
    count: float = 0.0
    useful: float = 0.0
    confidence_sum: float = 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.count if self.count else 0.0

    @property
    def rate(self) -> float:
        return self.useful / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """A tenant's reliability diagram; immutable, :func:`observe` returns a new one."""

    bins: tuple[Bin, ...] = field(default_factory=lambda: tuple(Bin() for _ in range(BINS)))

    @property
    def outcomes(self) -> float:
        return sum(b.count for b in self.bins)


def observe(
    calibration: Calibration, confidence: float, useful: bool, weight: float = 1.0
) -> Calibration:
    """Record one outcome; implicit signals count as a fraction (``weight``) of an explicit one."""
    index = bin_of(confidence, len(calibration.bins))
    old = calibration.bins[index]
    new = Bin(
        old.count + weight,
        old.useful + (weight if useful else 0.0),
        old.confidence_sum + weight * confidence,
    )
    return Calibration((*calibration.bins[:index], new, *calibration.bins[index + 1 :]))


def calibrated(calibration: Calibration, confidence: float) -> float:
    """The observed usefulness rate at this confidence, shrunk towards the raw value."""
    b = calibration.bins[bin_of(confidence, len(calibration.bins))]
    return (b.useful + PRIOR_WEIGHT * confidence) / (b.count + PRIOR_WEIGHT)


def expected_calibration_error(calibration: Calibration) -> float:
    total = calibration.outcomes
    if total == 0:
        return 0.0
    return sum(
        b.count / total * abs(b.rate - b.mean_confidence) for b in calibration.bins if b.count
    )


def adapted_threshold(calibration: Calibration, target_precision: float, current: float) -> float:
    """The lowest bin edge, not under ``current``, whose injections above it meet the target.

    Until enough outcomes are in, the configured threshold stands. If no edge meets the
    target, the highest edge with evidence is used: inject only where it is most likely to
    help. The configured threshold is a floor: below it the proxy abstains, so those bins get
    no outcomes, and a tenant whose injections are mostly useful would otherwise fall to 0
    on the strength of the confident ones and inject at any confidence at all (on LoCoMo,
    questions with no true answer in memory included: ``bench/locomo_confidence.py``).
    """
    if calibration.outcomes < MIN_OUTCOMES_TO_ADAPT:
        return current
    n = len(calibration.bins)
    for start in range(n):
        above = calibration.bins[start:]
        count = sum(b.count for b in above)
        if count and sum(b.useful for b in above) / count >= target_precision:
            return max(current, start / n)
    last = max((i for i, b in enumerate(calibration.bins) if b.count), default=0)
    return max(current, last / n)


def reliability(calibration: Calibration) -> list[dict[str, float]]:
    """The diagram as JSON-able rows, for the calibration endpoint."""
    n = len(calibration.bins)
    return [
        {
            "lower": i / n,
            "upper": (i + 1) / n,
            "count": b.count,
            "useful_rate": round(b.rate, 4),
            "mean_confidence": round(b.mean_confidence, 4),
        }
        for i, b in enumerate(calibration.bins)
    ]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count ½)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return float("nan")
    ranked = sorted((s, y) for s, y in zip(scores, labels, strict=True))
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2  # 1-based ranks i+1 … j share their mean
        rank_sum += average_rank * sum(1 for _, y in ranked[i:j] if y)
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
