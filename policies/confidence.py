"""Metacognition: how likely the recalled memories hold what the request needs.

Pure: plain features in, a probability out. :mod:`memory.retrieval` measures the features
of one recall; the proxy then calibrates the result per tenant (:mod:`policies.calibration`)
and abstains below the tenant's threshold.

The model is a logistic regression with fixed, rounded coefficients. They were fitted once on
the LoCoMo development split (``bench/confidence_fit.py``; label: an evidence turn is among
the injected memories) and checked on held-out halves and by leaving each conversation out in
turn, so they carry what generalises across conversations, not per-question detail. What each
feature says:

- ``margin``: the best cosine similarity minus the pool's median. A relevant memory stands
  out of the crowd of loosely related ones; an absolute similarity does not (MiniLM scores
  a chatty turn that shares the topic about as high as the answer).
- ``agreement``: the overlap of the vector and keyword top lists. Two independent retrievers
  pointing at the same memories is the best single sign that the search found its target.
- ``keyword_strength``: log(1 + the best BM25 score). High when rare query words occur
  together in one memory; near 0 when the query's words are absent from memory.
- ``coverage``: the IDF-weighted share of the query's words found in the best candidate.
- ``speculative``: the query asks for an inference or a yes/no judgement ("Would she…",
  "What might…", "Is it likely…"). Such answers are rarely stated in any one memory.
- ``names_date``: the query names a date, and recall has already narrowed to memories from
  around it (:func:`memory.retrieval.time_windows`): few memories compete.
- ``usefulness``: the mean usefulness posterior of the top candidates (0.5 without history).
  Not fitted (the benchmark has no feedback): set so that a posterior mean of 0.75 (seven
  useful outcomes in eight, on the Beta(2, 2) prior) moves the log-odds by +1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["ConfidenceFeatures", "confidence", "speculative"]


@dataclass(frozen=True, slots=True)
class ConfidenceFeatures:
    """What one recall knows about its own candidates (see the module docstring)."""

    margin: float
    agreement: float
    keyword_strength: float
    coverage: float
    speculative: bool = False
    names_date: bool = False
    usefulness: float = 0.5


# Log-odds per unit of each feature; "INTERCEPT" is the log-odds when every feature is 0.
# Rounded from the fit and shrunk where halves of the data disagreed (coverage 1.25 on all
# questions, -0.1 on a random half; names_date 2.2 against 0.5).
INTERCEPT = -3.0
MARGIN = 2.0
AGREEMENT = 1.2
KEYWORD_STRENGTH = 1.7
COVERAGE = 1.0
SPECULATIVE = -1.7
NAMES_DATE = 1.5
USEFULNESS = 4.0

_SPECULATIVE = re.compile(
    r"\b(?:would|might|likely|probably|possibly|could)\b|^\s*(?:is|are|does|do)\b",
    re.IGNORECASE,
)


def speculative(query: str) -> bool:
    """Whether the query asks for a judgement or an inference rather than a stated fact."""
    return bool(_SPECULATIVE.search(query))


def confidence(features: ConfidenceFeatures) -> float:
    """Probability in (0, 1) that the injected memories hold what the request needs."""
    logit = (
        INTERCEPT
        + MARGIN * features.margin
        + AGREEMENT * features.agreement
        + KEYWORD_STRENGTH * features.keyword_strength
        + COVERAGE * features.coverage
        + SPECULATIVE * float(features.speculative)
        + NAMES_DATE * float(features.names_date)
        + USEFULNESS * (features.usefulness - 0.5)
    )
    return 1.0 / (1.0 + math.exp(-logit))
