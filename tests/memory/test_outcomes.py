"""Per-question outcomes: a verdict counts for the question it was given for, and only there."""

from __future__ import annotations

from memory.outcomes import QuestionOutcomes, question_key

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
