"""Ranking recall candidates: fusion, recency, usefulness, floors, diversity and confidence.

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
4. Floors: a memory that feedback turned down for this very question (``rejected``, from
   :mod:`memory.outcomes`) is not recalled, and neither is the weak tail scoring under about
   half of the best candidate. As feedback accumulates, a question's recalled set gets
   smaller and more precise (``bench/feedback_sim.py``) instead of refilling with the
   next-best noise, while other questions keep every memory (pooled failures only sink a
   memory through step 3).
5. MMR over the candidates' vectors so the top k are not ten copies of one fact, stopping
   when the token budget is spent.
6. Confidence: :func:`confidence_features` measures the recall (margin, retriever agreement,
   keyword strength, query coverage, query shape, whether the people the query names are
   the ones whose statements match it, usefulness history) and
   :func:`policies.confidence.confidence` turns them into a probability.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from memory.attribution import attribution
from memory.conversation import Turn
from memory.model import Recalled, RecallResult, Source
from memory.store import Candidates
from memory.terms import term_set
from memory.usefulness import UsefulnessPrior, posterior_mean, prior_weight
from policies.confidence import ConfidenceFeatures, confidence, speculative
from policies.retention import DEFAULT_RETENTION, RetentionPolicy, decay

__all__ = [
    "RecallWeights", "confidence_features", "fuse", "rank", "time_windows", "without_repeats",
]  # fmt: skip

Floats = npt.NDArray[np.float64]
# An earlier asking of the question, as capture stored it: a user turn with the same terms and
# (near) the query's own vector. The cosine prefilter keeps term sets off the hot path.
_USER_TURN = Turn("user", "").as_memory()
_REPEAT_COSINE = 0.9


@dataclass(frozen=True)
class RecallWeights:
    keyword_weight: float = 0.5
    recency_weight: float = 0.2
    usefulness_strength: float = 0.5
    mmr_lambda: float = 0.75
    candidate_pool: int = 50
    # The weak tail: candidates scoring below this share of the best are not recalled. Just
    # under 0.5, where neighbour context puts an answer whose question matched (halfway
    # towards its neighbour). LoCoMo cold start: injected-evidence recall 84.5% → 83.9% for
    # 15% fewer tokens; and as feedback turns a question's noise down, its set shrinks rather
    # than refilling with weaker noise.
    relative_floor: float = 0.49


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
    """Each candidate's tier decay at its age, a :func:`decay` per tier present (rank runs on
    every recall: per-candidate datetime arithmetic was a fifth of it)."""
    memories = candidates.memories
    ages = now.timestamp() - candidates.created
    tiers = [m.tier for m in memories]
    out = np.empty(len(memories), np.float64)
    for tier in set(tiers):
        rows = np.fromiter((t is tier for t in tiers), np.bool_, len(tiers))
        out[rows] = decay(ages[rows], retention.for_tier(tier.value))
    return out


def _usefulness(candidates: Candidates, prior: UsefulnessPrior) -> Floats:
    memories = candidates.memories
    useful = np.fromiter((m.useful for m in memories), np.float64, len(memories))
    not_useful = np.fromiter((m.not_useful for m in memories), np.float64, len(memories))
    return posterior_mean(useful, not_useful, prior)


def without_repeats(candidates: Candidates, query: str) -> Candidates:
    """The candidates without earlier askings of this very question.

    Capture stores every user turn, so a question asked again finds itself: the same terms,
    and (embedded as a user turn, :func:`memory.conversation.query_embedding_text`) a cosine
    of ~1 that outscores whatever answers it. It tells the model nothing the request does not
    say, so it leaves the pool before ranking and confidence and its place in the budget goes
    to what answers. The answer given to it last time, a memory of its own, stays (raised by
    the asking as its neighbour, as any answer is by its question).
    """
    near = np.flatnonzero(candidates.vector_sim >= _REPEAT_COSINE)
    words = term_set(query) if len(near) else frozenset()
    if not words:
        return candidates
    repeats = [
        i
        for i in near.tolist()
        if (memory := candidates.memories[i]).source is Source.CAPTURE
        and memory.content.startswith(_USER_TURN)
        and term_set(memory.content[len(_USER_TURN) :]) == words
    ]
    if not repeats:
        return candidates
    keep = np.ones(len(candidates.memories), np.bool_)
    keep[repeats] = False
    return candidates.subset(keep)


def _eligible(
    candidates: Candidates, final: Floats, weights: RecallWeights, rejected: frozenset[str]
) -> npt.NDArray[np.bool_]:
    """Candidates feedback did not turn down for this question, and not in the weak tail."""
    n = len(candidates.memories)
    turned_down = (
        np.fromiter((m.id in rejected for m in candidates.memories), np.bool_, n)
        if rejected
        else np.zeros(n, np.bool_)
    )
    # The tail is cut relative to the best match in the pool, turned down or not: how well
    # the query can be matched is a property of the pool, and once feedback turns the noise
    # down, the set should shrink rather than refill with weaker noise.
    weak = final < weights.relative_floor * float(final.max())
    eligible: npt.NDArray[np.bool_] = ~turned_down & ~weak & (final > 0)
    return eligible


def _mmr(
    scores: Floats, vectors: npt.NDArray[np.float32], tokens: list[int], k: int,
    max_tokens: int | None, mmr_lambda: float, eligible: npt.NDArray[np.bool_],
) -> list[int]:  # fmt: skip
    chosen: list[int] = []
    budget = max_tokens if max_tokens is not None else None
    top = float(scores.max()) if len(scores) else 1.0
    # Only the eligible candidates compete (rejected ones and the weak tail are out before the
    # loop); ascending, so ties still go to the earlier candidate. A candidate leaves the
    # race by its relevance term turning -inf: one subtraction per round yields every open
    # candidate's MMR value and keeps the closed ones out of argmax.
    rows = np.flatnonzero(eligible)
    relevance = mmr_lambda * (scores[rows] / (top if top > 0 else 1.0))
    pool = vectors[rows]
    redundancy = np.zeros(len(rows), np.float64)
    value = relevance.copy()
    for _ in range(len(rows)):
        best = int(np.argmax(value))
        if len(chosen) >= k or value[best] == -np.inf:
            break
        relevance[best] = -np.inf
        row = int(rows[best])
        if budget is not None and tokens[row] > budget:
            value[best] = -np.inf
            continue  # does not fit; a shorter one further down may
        chosen.append(row)
        if budget is not None:
            budget -= tokens[row]
        np.maximum(redundancy, pool @ pool[best], out=redundancy)
        value = relevance - (1 - mmr_lambda) * redundancy
    return chosen


def confidence_features(
    candidates: Candidates, chosen: list[int], query: str, useful: Floats,
    *, searched: list[int] | None = None,
) -> ConfidenceFeatures:  # fmt: skip
    """Measure what :func:`policies.confidence.confidence` weighs (see its docstring).

    ``chosen`` indexes the recalled candidates, best first: their usefulness history counts.
    ``searched`` is what the search alone would recall, without feedback (default
    ``chosen``): margin, coverage and attribution describe it. ``query`` may be empty, and
    then the query-dependent features (coverage, shape, attribution) stay neutral.
    """
    found = chosen if searched is None else searched
    sims = candidates.vector_sim.astype(np.float64)
    vector_top = set(np.flatnonzero((candidates.vector_rank >= 0) & (candidates.vector_rank < 5)))
    keyword_top = set(
        np.flatnonzero((candidates.keyword_rank >= 0) & (candidates.keyword_rank < 5))
    )
    named = attribution(query, [candidates.memories[i].content for i in found], sims[found])
    return ConfidenceFeatures(
        margin=float(sims[found].max() - np.median(sims)),
        agreement=len(vector_top & keyword_top) / 5,
        keyword_strength=float(np.log1p(max(0.0, float(candidates.keyword.max())))),
        coverage=_coverage(query, candidates, found[0]),
        speculative=speculative(query),
        names_date=bool(time_windows(query)),
        several_people=named.people >= 2,
        misattribution=named.misattribution,
        usefulness=float(useful[chosen[:3]].mean()),
    )


def _coverage(query: str, candidates: Candidates, top: int) -> float:
    """IDF-weighted share of the query's terms in the best candidate; 1.0 without a query.

    Document frequencies come from the candidate pool: a query word in every candidate says
    little about which one answers it. Words no candidate holds are left out: they are
    paraphrase or vocabulary the memories do not use, and on LoCoMo counting them against the
    best candidate made the coverage a worse predictor (``bench/confidence_fit.py``). A query
    none of whose words any candidate holds covers nothing (0.0).
    """
    wanted = term_set(query)
    if not wanted:
        return 1.0
    pool = [term_set(m.content) for m in candidates.memories]
    frequency = Counter(t for d in pool for t in d & wanted)
    weight = {t: math.log1p(len(pool) / (1 + f)) for t, f in frequency.items()}
    total = sum(weight.values())
    return sum(w for t, w in weight.items() if t in pool[top]) / total if total else 0.0


def rank(
    candidates: Candidates,
    *,
    k: int,
    max_tokens: int | None,
    now: datetime,
    retention: RetentionPolicy = DEFAULT_RETENTION,
    prior: UsefulnessPrior = UsefulnessPrior(),
    weights: RecallWeights = RecallWeights(),
    query: str = "",
    rejected: frozenset[str] = frozenset(),
) -> RecallResult:
    """Order candidates into the final top ``k`` within ``max_tokens``, with confidence.

    ``query`` is the text the candidates were searched for; confidence reads its shape and
    which of its words the best candidate covers. ``rejected`` names the memories feedback
    turned down for this question (:mod:`memory.outcomes`): they are not recalled.
    """
    if not candidates.memories or k <= 0:
        return RecallResult(items=[], confidence=0.0)
    relevance = fuse(candidates, weights.keyword_weight)
    recency = _recency(candidates, now, retention)
    useful = _usefulness(candidates, prior)
    searched = relevance * ((1.0 - weights.recency_weight) + weights.recency_weight * recency)
    final = searched * prior_weight(useful, weights.usefulness_strength)
    chosen = _choose(final, candidates, k, max_tokens, weights, rejected)
    if not chosen:
        return RecallResult(items=[], confidence=0.0)
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
    # How well the search went is read off what it recalls without feedback, so feedback moves
    # confidence only through the usefulness history: once a question's noise was turned
    # down, the margin, coverage and attribution of what was left said the search had failed
    # (LoCoMo feedback simulation: abstentions on questions with feedback rose 2% -> 12%).
    unbiased = chosen
    if rejected or not np.array_equal(final, searched):
        unbiased = _choose(searched, candidates, k, max_tokens, weights, frozenset()) or chosen
    features = confidence_features(candidates, chosen, query, useful, searched=unbiased)
    return RecallResult(items=items, confidence=confidence(features))


def _choose(
    scores: Floats, candidates: Candidates, k: int, max_tokens: int | None,
    weights: RecallWeights, rejected: frozenset[str],
) -> list[int]:  # fmt: skip
    eligible = _eligible(candidates, scores, weights, rejected)
    tokens = [m.tokens for m in candidates.memories]
    return _mmr(scores, candidates.vectors, tokens, k, max_tokens, weights.mmr_lambda, eligible)
