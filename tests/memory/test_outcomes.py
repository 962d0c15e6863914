"""Per-question outcomes: a verdict counts for the question it was given for, and only there."""

from __future__ import annotations

import pytest

from memory.outcomes import (
    Forgotten,
    QuestionOutcomes,
    Verdict,
    news_from_bytes,
    news_to_bytes,
    question_key,
)

Q = question_key("What is the code of Gus's gym locker?")


def test_the_same_question_in_other_words_order_or_case_has_the_same_key() -> None:
    assert question_key("what's the gym locker code of Gus?") == Q
    assert question_key("Which gym does Gus train at?") != Q
    assert question_key("") == question_key("what is it?") == ""  # no terms, no key


def test_a_failure_turns_a_memory_down_for_that_question_only() -> None:
    book = QuestionOutcomes()
    book.record("t", "gus", Q, ["noise", "also-noise"], False)
    book.record("t", "gus", Q, ["code"], True)
    assert book.rejected("t", "gus", Q) == {"noise", "also-noise"}
    other = question_key("Which gym does Gus train at?")
    assert book.rejected("t", "gus", other) == frozenset()
    assert book.rejected("t", "hal", Q) == frozenset()  # another user
    assert book.rejected("u", "gus", Q) == frozenset()  # another tenant


def test_a_success_for_the_question_offsets_a_failure() -> None:
    book = QuestionOutcomes()
    book.record("t", "gus", Q, ["code"], False)
    book.record("t", "gus", Q, ["code"], True)
    assert book.rejected("t", "gus", Q) == frozenset()


def test_implicit_signals_count_a_fraction_each() -> None:
    book = QuestionOutcomes()
    for _ in range(3):
        book.record("t", "gus", Q, ["m"], -0.3)  # a regenerate
    assert book.rejected("t", "gus", Q) == frozenset()  # 0.9 of an outcome
    book.record("t", "gus", Q, ["m"], -0.3)
    assert book.rejected("t", "gus", Q) == {"m"}


def test_the_least_recently_asked_questions_go_first() -> None:
    book = QuestionOutcomes(capacity=2)
    first, second, third = (question_key(f"question about {w}") for w in ("ants", "bees", "cats"))
    book.record("t", "u", first, ["m"], False)
    book.record("t", "u", second, ["m"], False)
    assert book.rejected("t", "u", first) == {"m"}  # asked again: now the most recent
    book.record("t", "u", third, ["m"], False)
    assert book.rejected("t", "u", second) == frozenset()
    assert book.rejected("t", "u", first) == {"m"}


def test_forgetting_a_user_forgets_their_questions() -> None:
    book = QuestionOutcomes()
    book.record("t", "gus", Q, ["m"], False)
    book.record("t", "hal", Q, ["m"], False)
    book.forget("t", "gus")
    assert book.rejected("t", "gus", Q) == frozenset()
    assert book.rejected("t", "hal", Q) == {"m"}
    book.forget("t")
    assert book.rejected("t", "hal", Q) == frozenset()


def test_news_travels_between_replicas_intact_and_applies_as_the_call_it_stands_for() -> None:
    here, there = QuestionOutcomes(), QuestionOutcomes()
    told = [
        Verdict("t", "gus", Q, ("noise", "code"), False),
        Verdict("t", "gus", Q, ("code",), True),
        Verdict("t", "gus", Q, ("code",), 0.6),
        Verdict("t", "hal", Q, ("m",), -1.0),
    ]
    for news in told:
        here.apply(news)
        there.apply(news_from_bytes(news_to_bytes(news)))
    assert news_from_bytes(news_to_bytes(told[0])) == told[0]  # a bool stays a bool
    assert here.rejected("t", "gus", Q) == there.rejected("t", "gus", Q) == {"noise"}
    there.apply(news_from_bytes(news_to_bytes(Forgotten("t", "gus"))))
    assert there.rejected("t", "gus", Q) == frozenset()
    assert there.rejected("t", "hal", Q) == {"m"}
    there.apply(news_from_bytes(news_to_bytes(Forgotten("t", None))))  # the whole tenant
    assert there.rejected("t", "hal", Q) == frozenset()


@pytest.mark.parametrize(
    "raw",
    [b"{}", b"not json", b'{"tenant": "t", "user": "u", "question": "q", "ids": ["m"]}',
     b'{"tenant": "t", "user": "u", "question": "q", "ids": ["m"], "feedback": 7}'],
)  # fmt: skip
def test_a_malformed_message_is_refused_with_an_error_the_listener_ignores(raw: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        news_from_bytes(raw)
