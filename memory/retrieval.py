"""Ranking recall candidates: fusion, recency, usefulness, diversity and a first confidence.

Pure functions over :class:`memory.store.Candidates`; no I/O. The order of operations:

1. Score-weighted reciprocal-rank fusion of the vector and BM25 lists: each retriever adds
   ``1 / (k + rank)`` (Cormack et al., k = 60) times the hit's score relative to that
   retriever's best. Ranks need no calibration between cosine and BM25 scales; the relative
   score stops plain RRF's failure where a hit that matched only a common word ("about") in
   BM25 gets as much credit as the one that matched the rare, decisive term.
   Scaled so that the top hit of both retrievers is 1.0.
2. ``× recency``: the tier's half-life decay (``policies.retention``), mixed in with weight
   ``recency_weight`` so that a relevant old fact still beats an irrelevant new one.
3. ``× usefulness``: the Beta posterior mean mapped to a bounded factor
   (``memory.usefulness``).
4. MMR over the candidates' vectors so the top k are not ten copies of one fact, stopping
   when the token budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from memory.model import Recalled, RecallResult
from memory.store import Candidates
from memory.usefulness import UsefulnessPrior, posterior_mean, prior_weight
from policies.retention import DEFAULT_RETENTION, RetentionPolicy, decay

__all__ = ["RecallWeights", "confidence", "fuse", "rank"]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RecallWeights:
    rrf_k: float = 60.0
    recency_weight: float = 0.2
    usefulness_strength: float = 0.5
    mmr_lambda: float = 0.75
    candidate_pool: int = 50
    # Cosine similarities of MiniLM: unrelated text sits below ~0.15, a paraphrase above ~0.6.
    similarity_floor: float = 0.15
    similarity_span: float = 0.5


def fuse(candidates: Candidates, rrf_k: float) -> Floats:
    """Fused relevance in [0, 1]: 1.0 for the first hit of both retrievers."""
    scores = np.zeros(len(candidates.memories), np.float64)
    lists = ((candidates.vector_rank, candidates.vector_sim),
             (candidates.keyword_rank, candidates.keyword))  # fmt: skip
    for ranks, raw in lists:
        present = ranks >= 0
        if not present.any():
            continue
        values = np.clip(raw.astype(np.float64), 0.0, None)
        best = float(values[present].max())
        relative = values[present] / best if best > 0 else np.ones(int(present.sum()))
        scores[present] += relative / (rrf_k + 1.0 + ranks[present])
    return scores / (2.0 / (rrf_k + 1.0))


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


def confidence(candidates: Candidates, chosen: list[int], final: Floats, weights: RecallWeights) -> float:
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
    relevance = fuse(candidates, weights.rrf_k)
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
