"""Usefulness statistics: a Beta posterior per memory over "was it useful when injected?".

Each memory carries pseudo-counts ``useful`` (α − 1) and ``not_useful`` (β − 1) on top of a
Beta(``prior_useful``, ``prior_not_useful``) prior. Feedback may be a boolean or a score in
``[-1, 1]``; a score splits one unit of evidence between the two counts, so ``0.0`` is
"no information either way" and adds half a count to each (it does narrow the posterior).
Pure functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

__all__ = [
    "UsefulnessPrior",
    "evidence",
    "posterior_mean",
    "prior_weight",
    "rejected_for_question",
]


@dataclass(frozen=True)
class UsefulnessPrior:
    """Beta prior; the default Beta(2, 2) says "probably fine", weakly (mean 0.5)."""

    useful: float = 2.0
    not_useful: float = 2.0


def evidence(feedback: bool | float) -> tuple[float, float]:
    """Map one piece of feedback to (useful, not_useful) increments."""
    if isinstance(feedback, bool):
        return (1.0, 0.0) if feedback else (0.0, 1.0)
    score = max(-1.0, min(1.0, float(feedback)))
    return (score + 1.0) / 2.0, (1.0 - score) / 2.0


@overload
def posterior_mean(useful: float, not_useful: float, prior: UsefulnessPrior) -> float: ...
@overload
def posterior_mean(useful: Floats, not_useful: Floats, prior: UsefulnessPrior) -> Floats: ...
def posterior_mean(
    useful: float | Floats, not_useful: float | Floats, prior: UsefulnessPrior
) -> float | Floats:
    """Expected probability that the memory helps, in (0, 1); elementwise over arrays (a
    ranking weighs its candidates at once)."""
    alpha = prior.useful + np.maximum(useful, 0.0)
    beta = prior.not_useful + np.maximum(not_useful, 0.0)
    mean = alpha / (alpha + beta)
    return float(mean) if np.ndim(mean) == 0 else mean


@overload
def prior_weight(mean: float, strength: float = 0.5) -> float: ...
@overload
def prior_weight(mean: Floats, strength: float = 0.5) -> Floats: ...
def prior_weight(mean: float | Floats, strength: float = 0.5) -> float | Floats:
    """Multiplicative ranking factor: 1.0 at the prior mean 0.5, ``1 ± strength/2`` at the ends;
    elementwise over arrays.

    Bounded so that usefulness re-orders close calls without overriding relevance.
    """
    return 1.0 + strength * (mean - 0.5)


def rejected_for_question(useful: float, not_useful: float) -> bool:
    """Feedback for one question turned the memory down: a net full outcome against it.

    One explicit "not useful" is enough (the user said so for this very question); implicit
    signals count a fraction each (a regenerate -0.3), so a few are needed; any success for
    the question offsets a failure. See :mod:`memory.outcomes` for why this is kept per question.
    """
    return not_useful - useful >= 1.0
