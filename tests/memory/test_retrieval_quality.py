"""Recall quality mechanisms: stemming, neighbour context, dated queries, fusion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from memory.context import in_context
from memory.retrieval import time_windows
from memory.terms import stem, terms
from tests.memory.test_ranking import index_of, memory, recall

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_stem_meets_inflections_at_one_key() -> None:
    assert {stem(w) for w in ("submitted", "submitting", "submits", "submit")} == {"submit"}
    assert stem("making") == stem("make") and stem("stories") == stem("story")
    assert stem("family") == "family" and stem("glasses") == stem("glass")


def test_question_words_are_not_terms() -> None:
    assert terms("How long has Nate had his turtles?") == [
        stem(w) for w in ("long", "nate", "turtle")
    ]


def test_time_windows_need_a_real_date() -> None:
    ((start, end),) = time_windows("What did Nate cook on 9 November, 2022?")
    day = datetime(2022, 11, 9, tzinfo=UTC).timestamp()
    assert start < day < end and end - start < 14 * 86400
    assert len(time_windows("in September 2022 and in 2021")) == 2
    assert time_windows("May I ask what you did?") == []
    assert time_windows("on 30 February 2023") == []


def test_in_context_lifts_towards_a_linked_neighbour_only() -> None:
    scores = np.asarray([0.9, 0.1, 0.1, 0.8], np.float32)
    link = np.asarray([False, True, False, False])  # row 1 continues row 0
    lifted = in_context(scores, link)
    assert np.isclose(lifted[1], 0.5) and lifted[0] == scores[0]
    assert lifted[2] == scores[2] and lifted[3] == scores[3]  # not linked


def test_in_context_reaches_two_rows_through_a_chain() -> None:
    scores = np.asarray([0.9, 0.1, 0.1, 0.1], np.float32)
    chain = in_context(scores, np.asarray([False, True, True, False]))
    assert np.isclose(chain[1], 0.5) and np.isclose(chain[2], 0.3)  # a quarter of the way
    assert chain[3] == scores[3]
    assert in_context(scores[:1], np.asarray([False]))[0] == scores[0]


def test_an_answer_is_found_through_its_question() -> None:
    asked = memory(0, "Which city did you pick for the conference?")
    answer = memory(1, "Lisbon, finally!")
    noise = [
        memory(i, f"unrelated chatter number {i}", age=timedelta(days=i)) for i in range(2, 30)
    ]
    result = recall(index_of([asked, answer, *noise]), "conference city", k=3)
    assert {"m0", "m1"} <= {i.memory.id for i in result.items}


def test_a_named_date_prefers_memories_from_then() -> None:
    then = datetime(2023, 5, 4, tzinfo=UTC)
    older = memory(0, "we had dinner at the harbour", age=NOW - then + timedelta(days=90))
    dated = memory(1, "we had dinner at the harbour place", age=NOW - then)
    result = recall(index_of([older, dated]), "Where did we have dinner on 3 May, 2023?", k=2)
    assert result.items[0].memory.id == "m1"
