"""The outcome journal: a reopened book holds what the closed one had learned."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from memory.outcome_journal import COMPACT_SLACK, OutcomeJournal
from memory.outcomes import Forgotten, QuestionOutcomes, Verdict, question_key

Q = question_key("What is the code of Gus's gym locker?")
OTHER = question_key("Which gym does Gus train at?")


def _reopened(path: Path, capacity: int = 20_000) -> tuple[QuestionOutcomes, int]:
    book = QuestionOutcomes(capacity)
    journal = OutcomeJournal(path, book)
    replayed = journal.open()
    journal.close()
    return book, replayed


def _learn(book: QuestionOutcomes, journal: OutcomeJournal, *news: Verdict | Forgotten) -> None:
    for item in news:
        book.apply(item)
        journal.write(item)


def test_verdicts_and_forgotten_users_are_replayed_in_order(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    book = QuestionOutcomes()
    journal = OutcomeJournal(path, book)
    assert journal.open() == 0  # no file yet: an empty book
    _learn(
        book,
        journal,
        Verdict("t", "gus", Q, ("noise", "code"), False),
        Verdict("t", "gus", Q, ("code",), True),
        Verdict("t", "gus", Q, ("code",), 1.0),
        Verdict("t", "gus", OTHER, ("gym",), -0.3),
        Verdict("t", "hal", Q, ("m",), False),
        Forgotten("t", "hal"),
        Verdict("u", "gus", Q, ("x",), False),
    )
    # Not closed: what a killed process leaves behind is what the reopened book reads.
    reopened, replayed = _reopened(path)
    assert replayed == 7
    assert list(reopened.questions()) == list(book.questions())
    assert reopened.rejected("t", "gus", Q) == {"noise"}
    assert reopened.rejected("t", "hal", Q) == frozenset()
    assert reopened.rejected("u", "gus", Q) == {"x"}
    journal.close()


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outcomes.jsonl"
    book = QuestionOutcomes()
    journal = OutcomeJournal(path, book)
    journal.open()
    _learn(book, journal, Verdict("t", "gus", Q, ("noise",), False))
    journal.close()
    with path.open("ab") as torn:
        torn.write(b'{"tenant": "t", "user": "gus", "quest')
    with caplog.at_level(logging.WARNING, logger="memory.outcome_journal"):
        reopened, replayed = _reopened(path)
    assert replayed == 1
    assert reopened.rejected("t", "gus", Q) == {"noise"}
    assert "skipped 1 unreadable lines" in caplog.text


def test_compaction_keeps_the_book_and_drops_what_it_no_longer_holds(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    book = QuestionOutcomes(capacity=10)
    journal = OutcomeJournal(path, book)
    journal.open()
    _learn(book, journal, Verdict("t", "hal", Q, ("m",), False), Forgotten("t", "hal"))
    keys = [question_key(f"question number {n} about gyms") for n in range(40)]
    verdicts = COMPACT_SLACK + 60
    for n in range(verdicts):
        key = keys[n % len(keys)]
        _learn(book, journal, Verdict("t", "gus", key, (f"m{n % 3}",), n % 2 == 0))
    journal.close()
    text = path.read_bytes()
    # Rewritten from the book: far fewer lines than verdicts, none of the forgotten user's.
    assert len(text.splitlines()) <= 2 * len(book) + COMPACT_SLACK < verdicts
    assert b'"hal"' not in text
    reopened, _ = _reopened(path, capacity=10)
    assert list(reopened.questions()) == list(book.questions())


def test_an_unwritable_journal_leaves_the_book_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    book = QuestionOutcomes()
    journal = OutcomeJournal(blocked / "outcomes.jsonl", book)
    with pytest.raises(OSError):
        journal.open()
    _learn(book, journal, Verdict("t", "gus", Q, ("noise",), False))  # no file: RAM only
    assert book.rejected("t", "gus", Q) == {"noise"}
