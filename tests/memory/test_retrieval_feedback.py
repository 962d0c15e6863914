"""Ranking under feedback (usefulness floor, weak-tail cut) and the confidence features."""

from __future__ import annotations

import numpy as np

from memory.model import RecallResult
from memory.retrieval import RecallWeights, confidence_features, rank
from memory.store import Candidates
from memory.usefulness import UsefulnessPrior, keeps_failing, posterior_mean
from tests.memory.test_ranking import EMB, NOW, index_of, memory, recall

NO_TAIL_CUT = RecallWeights(relative_floor=0.0)


def _ids(result: RecallResult) -> list[str]:
    return [i.memory.id for i in result.items]


def test_a_memory_that_never_helped_is_dropped_after_three_failures() -> None:
    fact = memory(0, "the boiler code is 4471")
    for failures, kept in ((2, True), (3, False)):
        noise = memory(1, "the boiler code is on the fridge", not_useful=failures)
        found = _ids(recall(index_of([fact, noise]), "boiler code", k=2, weights=NO_TAIL_CUT))
        assert ("m1" in found) is kept, failures
        assert found[0] == "m0"


def test_a_memory_credited_once_is_kept_but_sinks() -> None:
    mixed = memory(0, "the boiler code is 4471", useful=1, not_useful=9)
    fresh = memory(1, "the boiler code is 4471", tokens=11)
    result = recall(
        index_of([mixed, fresh]),
        "boiler code",
        k=2,
        weights=RecallWeights(relative_floor=0.0, mmr_lambda=1.0),
    )
    assert _ids(result) == ["m1", "m0"]
    assert result.items[1].usefulness == posterior_mean(1, 9, UsefulnessPrior())


def test_the_weak_tail_is_cut_relative_to_the_best() -> None:
    rows = [
        memory(0, "Ada plays the cello in the Lyon orchestra"),
        memory(1, "Ada plays the cello on Sundays in Lyon"),
        memory(2, "the orchestra bus was late"),
        *[memory(i, f"unrelated chatter number {i}") for i in range(3, 30)],
    ]
    index = index_of(rows)
    query = "Ada cello Lyon orchestra"
    everything = recall(index, query, k=10, weights=NO_TAIL_CUT)
    cut = recall(index, query, k=10)
    best = everything.items[0].score
    assert any(i.score < 0.49 * best for i in everything.items)  # there is a weak tail
    assert _ids(cut) == [i.memory.id for i in everything.items if i.score >= 0.49 * best]
    assert {"m0", "m1"} <= set(_ids(cut))


def _candidates(contents: list[str], query: str) -> Candidates:
    index = index_of([memory(i, c) for i, c in enumerate(contents)])
    return index.search(EMB.embed_batch([query])[0], query, session=None, tiers=None, limit=50)


def test_coverage_weighs_rare_query_words_more() -> None:
    contents = [
        "Bo fixed the tandem bicycle",
        "Bo went to the market",
        "Bo cooked dinner",
        "Bo read a book",
    ]
    candidates = _candidates(contents, "Bo tandem bicycle")
    useful = np.full(len(contents), 0.5)
    by_id = {m.id: n for n, m in enumerate(candidates.memories)}
    rare = confidence_features(candidates, [by_id["m0"]], "Bo tandem bicycle", useful)
    common = confidence_features(candidates, [by_id["m1"]], "Bo tandem bicycle", useful)
    assert rare.coverage == 1.0
    # "bo" is in every candidate, so it is worth little: well under the unweighted third.
    assert 0.0 < common.coverage < 1 / 3


def test_query_features_are_neutral_without_a_query() -> None:
    query = "Would Bo ride a tandem in May 2023?"
    candidates = _candidates(["Bo fixed the tandem bicycle"], query)
    with_query = confidence_features(candidates, [0], query, np.asarray([0.5]))
    without = confidence_features(candidates, [0], "", np.asarray([0.5]))
    assert with_query.speculative and with_query.names_date
    assert not without.speculative and not without.names_date and without.coverage == 1.0


def test_confidence_is_higher_on_topic_and_reads_the_query() -> None:
    rows = [
        memory(0, "Ada plays the cello in the Lyon orchestra"),
        *[memory(i, f"unrelated chatter number {i}") for i in range(1, 20)],
    ]
    index = index_of(rows)

    def confidence_for(query: str) -> float:
        candidates = index.search(
            EMB.embed_batch([query])[0], query, session=None, tiers=None, limit=50
        )
        return rank(candidates, k=5, max_tokens=None, now=NOW, query=query).confidence

    on_topic = confidence_for("Which orchestra does Ada play the cello in?")
    speculative = confidence_for("Would Ada play the cello in an orchestra?")
    off_topic = confidence_for("How do quasars emit x-rays?")
    assert on_topic > speculative > off_topic
    assert 0.0 <= off_topic < 0.2 < on_topic <= 1.0


def test_keeps_failing_needs_evidence_a_low_posterior_and_no_success() -> None:
    prior = UsefulnessPrior()

    def failing(useful: float, not_useful: float) -> bool:
        return keeps_failing(useful, not_useful, prior, floor=0.3, min_outcomes=3.0)

    assert not failing(0, 2)  # too little evidence
    assert failing(0, 3)  # 2 / 7 = 0.29
    assert not failing(1, 20)  # helped once: sinks in the ranking, is not dropped
    assert not failing(0.5, 2.5)  # a neutral score (0.0) counts half each way: mean 0.36
    assert failing(0.5, 4.5)  # mean 0.25, and never a full success
