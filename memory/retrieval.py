"""Ranking recall candidates: fusion, recency, usefulness, diversity and a first confidence.

Pure functions over :class:`memory.store.Candidates`; no I/O. The order of operations:

1. Fusion: a convex mix (``keyword_weight``, 0.5) of the cosine and the BM25 score, each
   relative to the best candidate's, so the top hit of both retrievers is 1.0. Scores carry
   what ranks drop: on LoCoMo (``bench/locomo_recall.py``) it beat score-weighted RRF by
   2 points of R@5. The index has already put each score in its context (a turn lifted
   towards a matching neighbour) and weighted memories from a date the query names
   (:func:`time_windows`).
2. ``× recency``: the tier's half-life decay (``policies.retention``), mixed in with weight
   ``recency_weight`` so that a relevant old fact still beats an irrelevant new one.
3. ``× usefulness``: the Beta posterior mean mapped to a bounded factor
   (``memory.usefulness``).
4. MMR over the candidates' vectors so the top k are not ten copies of one fact, stopping
   when the token budget is spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from memory.model import Recalled, RecallResult
from memory.store import Candidates
from memory.usefulness import UsefulnessPrior, posterior_mean, prior_weight
from policies.retention import DEFAULT_RETENTION, RetentionPolicy, decay

__all__ = ["RecallWeights", "confidence", "fuse", "rank", "time_windows"]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RecallWeights:
    keyword_weight: float = 0.5
    recency_weight: float = 0.2
    usefulness_strength: float = 0.5
    mmr_lambda: float = 0.75
    candidate_pool: int = 50
    # Cosine similarities of MiniLM: unrelated text sits below ~0.15, a paraphrase above ~0.6.
    similarity_floor: float = 0.15
    similarity_span: float = 0.5


_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d{2})"
# "9 November, 2022", "November 9, 2022", "November 2022", "2022": a month needs a year
# ("may" alone is a verb far more often than a month).
_DATE = re.compile(
    rf"\b(?:{_DAY}\s+(?:of\s+)?)?{_MONTH}\b(?:\s+{_DAY}\b)?,?\s+{_YEAR}\b|\b{_YEAR}\b",
    re.IGNORECASE,
)
# People talk about an event on the day or in the days after it happened: a window reaches
# a little before the named date and a week past it.
_BEFORE = timedelta(days=2)
_AFTER = timedelta(days=8)


def time_windows(query: str) -> list[tuple[float, float]]:
    """Unix-time windows for the explicit dates a query names (day, month or year)."""
    windows = []
    for match in _DATE.finditer(query):
        day_a, month, day_b, year, bare_year = match.groups()
        if bare_year is not None:
            start = datetime(int(bare_year), 1, 1, tzinfo=UTC)
            end = start.replace(year=start.year + 1)
        else:
            number = next(i for i, name in enumerate(_MONTHS, 1) if name[:3] == month[:3].lower())
            day = day_a or day_b
            try:
                start = datetime(int(year), number, int(day) if day else 1, tzinfo=UTC)
            except ValueError:  # "30 February": not a date, no window
                continue
            end = start + timedelta(days=1) if day else _next_month(start)
        windows.append(((start - _BEFORE).timestamp(), (end + _AFTER).timestamp()))
    return windows


def _next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def fuse(candidates: Candidates, keyword_weight: float) -> Floats:
    """Relevance in [0, 1]: each retriever's score relative to its best candidate, mixed."""
    cosine = np.clip(candidates.vector_sim.astype(np.float64), 0.0, None)
    keyword = np.clip(candidates.keyword.astype(np.float64), 0.0, None)
    return (1.0 - keyword_weight) * _relative(cosine) + keyword_weight * _relative(keyword)


def _relative(scores: Floats) -> Floats:
    best = float(scores.max()) if len(scores) else 0.0
    return scores / best if best > 0 else np.zeros_like(scores)


def _recency(candidates: Candidates, now: datetime, retention: RetentionPolicy) -> Floats:
    return np.asarray(
        [
            decay((now - m.created_at).total_seconds(), retention.for_tier(m.tier.value))
            for m in candidates.memories
        ],
        np.float64,
    )


def _usefulness(candidates: Candidates, prior: UsefulnessPrior) -> Floats:
    return np.asarray(
        [posterior_mean(m.useful, m.not_useful, prior) for m in candidates.memories], np.float64
    )


def _mmr(
    scores: Floats, vectors: npt.NDArray[np.float32], tokens: list[int], k: int,
    max_tokens: int | None, mmr_lambda: float,
) -> list[int]:  # fmt: skip
    chosen: list[int] = []
    budget = max_tokens if max_tokens is not None else None
    top = float(scores.max()) if len(scores) else 1.0
    relevance = scores / (top if top > 0 else 1.0)
    redundancy = np.zeros(len(scores), np.float64)
    open_ = np.ones(len(scores), bool)
    while len(chosen) < k and open_.any():
        value = np.where(open_, mmr_lambda * relevance - (1 - mmr_lambda) * redundancy, -np.inf)
        best = int(np.argmax(value))
        open_[best] = False
        if budget is not None and tokens[best] > budget:
            continue  # does not fit; a shorter one further down may
        chosen.append(best)
        if budget is not None:
            budget -= tokens[best]
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen


def confidence(
    candidates: Candidates, chosen: list[int], final: Floats, weights: RecallWeights
) -> float:
    """A first, honest estimate in [0, 1] that the recalled memories are on topic.

    Mostly the best cosine similarity (calibrated to MiniLM's range), plus agreement (the
    top hit was found by both retrievers) and a margin bonus (the top hit stands out).
    """
    if not chosen:
        return 0.0
    best_sim = float(candidates.vector_sim[chosen].max())
    similarity = np.clip((best_sim - weights.similarity_floor) / weights.similarity_span, 0, 1)
    top = chosen[0]
    agree = float(candidates.vector_rank[top] >= 0 and candidates.keyword_rank[top] >= 0)
    rest = [final[i] for i in chosen[1:]]
    margin = 0.0 if not rest or final[top] <= 0 else float((final[top] - max(rest)) / final[top])
    return float(np.clip(0.65 * similarity + 0.25 * agree + 0.10 * margin, 0.0, 1.0))


def rank(
    candidates: Candidates,
    *,
    k: int,
    max_tokens: int | None,
    now: datetime,
    retention: RetentionPolicy = DEFAULT_RETENTION,
    prior: UsefulnessPrior = UsefulnessPrior(),
    weights: RecallWeights = RecallWeights(),
) -> RecallResult:
    """Order candidates into the final top ``k`` within ``max_tokens``, with confidence."""
    if not candidates.memories or k <= 0:
        return RecallResult(items=[], confidence=0.0)
    relevance = fuse(candidates, weights.keyword_weight)
    recency = _recency(candidates, now, retention)
    useful = _usefulness(candidates, prior)
    final = (
        relevance
        * ((1.0 - weights.recency_weight) + weights.recency_weight * recency)
        * np.asarray([prior_weight(u, weights.usefulness_strength) for u in useful])
    )
    tokens = [m.tokens for m in candidates.memories]
    chosen = _mmr(final, candidates.vectors, tokens, k, max_tokens, weights.mmr_lambda)
    items = [
        Recalled(
            memory=candidates.memories[i],
            score=round(float(final[i]), 6),
            vector=float(candidates.vector_sim[i]),
            keyword=float(candidates.keyword[i]),
            recency=float(recency[i]),
            usefulness=float(useful[i]),
        )
        for i in chosen
    ]
    return RecallResult(items=items, confidence=confidence(candidates, chosen, final, weights))
