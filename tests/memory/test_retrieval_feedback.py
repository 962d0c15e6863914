"""Ranking under feedback (usefulness floor, weak-tail cut) and the confidence features."""

from __future__ import annotations

import numpy as np
import pytest

from memory.model import RecallResult
from memory.retrieval import RecallWeights, confidence_features, rank
from memory.store import Candidates
from memory.usefulness import UsefulnessPrior, posterior_mean, rejected_for_question
from tests.memory.test_ranking import EMB, NOW, index_of, memory, recall

NO_TAIL_CUT = RecallWeights(relative_floor=0.0)


def _ids(result: RecallResult) -> list[str]:
    return [i.memory.id for i in result.items]


def test_memories_turned_down_for_the_question_are_not_recalled() -> None:
    fact = memory(0, "the boiler code is 4471")
    noise = memory(1, "the boiler code is on the fridge")
    index = index_of([fact, noise])
    assert _ids(recall(index, "boiler code", k=2, weights=NO_TAIL_CUT)) == ["m0", "m1"]
    turned_down = recall(index, "boiler code", k=2, weights=NO_TAIL_CUT, rejected=frozenset({"m1"}))
    assert _ids(turned_down) == ["m0"]


def test_pooled_failures_sink_a_memory_but_never_drop_it() -> None:
    # Nine failures on other questions, never a success: still recalled, below a fresh one.
    failing = memory(0, "the boiler code is 4471", not_useful=9)
    fresh = memory(1, "the boiler code is 4471", tokens=11)
    result = recall(
        index_of([failing, fresh]), "boiler code", k=2,
        weights=RecallWeights(relative_floor=0.0, mmr_lambda=1.0),
    )  # fmt: skip
    assert _ids(result) == ["m1", "m0"]


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


@pytest.mark.parametrize(
    ("useful", "not_useful", "expected"),
    [
        (0, 1, True),  # one explicit "not useful" for this very question
        (0, 0.9, False),  # three regenerates (-0.3 each) are not quite one
        (0, 1.2, True),  # four are
        (1, 1, False),  # a success for the question offsets a failure
        (1, 2, True),
        (0.25, 0.75, False),  # a score of -0.5 (half a unit each way)
    ],
)
def test_a_question_turns_a_memory_down_on_a_net_full_failure(
    useful: float, not_useful: float, expected: bool
) -> None:
    assert rejected_for_question(useful, not_useful) is expected


def test_turning_a_questions_noise_down_leaves_the_searchs_confidence_alone() -> None:
    # The noise matches the query's words better than the answer does. Turning it down for
    # this question changes what is recalled, not how well the search went.
    rows = [
        memory(0, "the boiler code is on the fridge door"),
        memory(1, "4471 opens the boiler"),
        *[memory(i, f"unrelated chatter number {i}") for i in range(2, 12)],
    ]
    query = "What is the boiler code?"
    candidates = _candidates([m.content for m in rows], query)

    def ranked(rejected: frozenset[str]) -> RecallResult:
        return rank(candidates, k=5, max_tokens=None, now=NOW, query=query, rejected=rejected)

    before, after = ranked(frozenset()), ranked(frozenset({"m0"}))
    assert _ids(before)[0] == "m0" and _ids(after)[0] == "m1"
    assert after.confidence == before.confidence


def test_earlier_askings_of_the_question_leave_the_pool_and_the_ranks_close_up() -> None:
    from memory.model import Source
    from memory.retrieval import without_repeats

    question = "What is the boiler code?"
    asked = memory(0, f"User: {question}").model_copy(update={"source": Source.CAPTURE})
    reworded = memory(1, "User: what is the boiler code").model_copy(
        update={"source": Source.CAPTURE}
    )
    stored = memory(2, f"User: {question}", tokens=11)  # stored on purpose, through the API
    fact = memory(3, "the boiler code is 4471")
    other = memory(4, "User: Is the boiler code 4471?").model_copy(
        update={"source": Source.CAPTURE}
    )
    index = index_of([asked, reworded, stored, fact, other])
    query = f"User: {question}"
    pool = index.search(EMB.embed_batch([query])[0], question, session=None, tiers=None, limit=50)
    kept = without_repeats(pool, question)
    assert {m.id for m in pool.memories} - {m.id for m in kept.memories} == {"m0", "m1"}
    for ranks in (kept.vector_rank, kept.keyword_rank):
        present = sorted(int(r) for r in ranks if r >= 0)
        assert present == list(range(len(present)))  # 0..n-1 again, no gap where m0 was
    assert without_repeats(pool, "") is pool  # no terms: nothing to compare
