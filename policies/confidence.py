"""Metacognition: how likely the recalled memories hold what the request needs.

Pure: plain features in, a probability out. :mod:`memory.retrieval` measures the features
of one recall; the proxy then calibrates the result per tenant (:mod:`policies.calibration`)
and abstains below the tenant's threshold.

The model is a logistic regression with fixed, rounded coefficients, fitted on the LoCoMo
development split by ``bench/confidence_fit.py`` in two parts. The retrieval features were
fitted on the answerable questions (label: an evidence turn is among the injected memories);
the misattribution slope on all of them, adversarial ones counting as "nothing useful", with
the retrieval part as a fixed offset (so it lowers confidence only where it sees a sign). Each
was checked on held-out halves and by leaving each conversation out in turn, and the values
here are rounded means over measuring runs (retrieval is not bit-for-bit repeatable), so
they carry what generalises across conversations, not per-question detail. What each says:

- ``margin``: the best cosine similarity minus the pool's median. A relevant memory stands
  out of the crowd of loosely related ones. Weak once the others are known (fitted between
  -0.1 and 1.1): MiniLM scores a chatty turn on the topic about as high as the answer.
- ``agreement``: the overlap of the vector and keyword top lists. Two independent retrievers
  pointing at the same memories is a sign that the search found its target.
- ``keyword_strength``: log(1 + the best BM25 score), the strongest single feature. High when
  rare query words occur together in one memory; near 0 when they are absent from memory.
- ``coverage``: the IDF-weighted share of the query's words (those the pool holds at all)
  found in the best candidate.
- ``speculative``: the query asks for an inference or a yes/no judgement ("Would she…",
  "What might…", "Is it likely…"). Such answers are rarely stated in any one memory.
- ``names_date``: the query names a date, and recall has already narrowed to memories from
  around it (:func:`memory.retrieval.time_windows`): few memories compete.
- ``several_people``: the query names two or more of the speakers in memory ("What do Jon and
  Gina both like?"): the answer spans several memories, and all of them are needed.
- ``misattribution``: how far another speaker's statements match the query better than those
  of the person it names (:mod:`memory.attribution`), 0 without such a sign. A question that
  pairs a person with someone else's fact finds that fact all the same, and every retrieval
  feature says the search went well; only the pairing is wrong.
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
    several_people: bool = False
    misattribution: float = 0.0
    usefulness: float = 0.5


# Log-odds per unit of each feature; "INTERCEPT" is the log-odds when every feature is 0.
# Rounded means of the fits of three measuring runs (bench/confidence_fit.py; retrieval is not
# bit-for-bit repeatable): intercept -3.31 / -3.26 / -3.76, margin 0.98 / -0.14 / 1.05,
# agreement 1.21 / 1.59 / 1.64, keyword strength 2.01 / 2.07 / 2.15, coverage 1.21 / 1.26 /
# 1.37, speculative -2.00 / -2.08 / -2.02, names a date 1.85 / 1.88 / 1.80, several people
# -1.35 / -1.34 / -1.24; misattribution -13.4 (one run of its final form; -11.9 to -15.8
# leaving each conversation out).
INTERCEPT = -3.4
MARGIN = 0.6
AGREEMENT = 1.5
KEYWORD_STRENGTH = 2.1
COVERAGE = 1.3
SPECULATIVE = -2.0
NAMES_DATE = 1.8
SEVERAL_PEOPLE = -1.3
MISATTRIBUTION = -13.4
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
        + SEVERAL_PEOPLE * float(features.several_people)
        + MISATTRIBUTION * features.misattribution
        + USEFULNESS * (features.usefulness - 0.5)
    )
    return 1.0 / (1.0 + math.exp(-logit))
