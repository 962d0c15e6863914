"""The outcome book's journal: what per-question feedback taught, kept across restarts.

One JSON line per change, appended as it happens: a verdict or a forgotten user (the
messages replicas exchange, :func:`memory.outcomes.news_to_bytes`; what this replica hears
from the others is journaled too), or one question's whole tally, which is what a
compaction writes. At start the lines are replayed into the book in order; one that a crash
cut short is skipped.

An append is a buffered write and a flush, made on the event loop: a few microseconds, and
feedback is rare next to chat requests. Flushed at once, the lines survive a killed process;
they are not fsynced, so a power cut may lose the last seconds' verdicts, which costs those
questions a re-learn (the pooled usefulness counts are in the store and lose nothing).

The journal is compacted when it holds more than twice the lines the book needs (one per
question) plus :data:`COMPACT_SLACK`: it is rewritten from the book into a temporary file
that then replaces it, so its size stays within a small multiple of the bounded book's, and
the lines of forgotten users and of questions the book let go are gone from disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import orjson

from memory.outcomes import OutcomeNews, QuestionOutcomes, news_from_bytes, news_to_bytes

__all__ = ["COMPACT_SLACK", "OutcomeJournal"]

log = logging.getLogger(__name__)

# Lines appended beyond twice the book's before a compaction: a small book is not rewritten
# after every verdict.
COMPACT_SLACK = 1_000


class OutcomeJournal:
    """Appends the book's changes to ``path`` and replays them into the book at start."""

    def __init__(self, path: Path, book: QuestionOutcomes) -> None:
        self._path = path
        self._book = book
        self._file: BinaryIO | None = None
        self._lines = 0  # lines in the file, replayed or appended
        self._failing = False

    def open(self) -> int:
        """Replay the journal into the book, compact it if due, and open it for appending.

        Returns how many lines were replayed. Raises ``OSError`` when the file cannot be read
        or created; the book then lasts until the process ends.
        """
        replayed = skipped = 0
        if self._path.is_file():
            with self._path.open("rb") as journal:
                for line in journal:
                    if not line.strip():
                        continue
                    try:
                        _replay(self._book, line)
                    except (ValueError, KeyError, TypeError):
                        skipped += 1
                    else:
                        replayed += 1
        if skipped:
            log.warning("outcome journal %s: skipped %d unreadable lines", self._path, skipped)
        self._lines = replayed + skipped
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._compaction_due():
            self._compact()
        else:
            self._file = self._path.open("ab")
        return replayed

    def write(self, news: OutcomeNews) -> None:
        """Append one change the book has applied. Never raises: a disk error is logged and
        the book carries on in RAM."""
        if self._file is None:
            return
        try:
            self._file.write(news_to_bytes(news) + b"\n")
            self._file.flush()
            self._lines += 1
            if self._compaction_due():
                self._compact()
        except OSError as error:
            if not self._failing:
                log.warning("outcome journal %s: write failed (%s)", self._path, error)
            self._failing = True
        else:
            if self._failing:
                log.warning("outcome journal %s: writing again", self._path)
            self._failing = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _compaction_due(self) -> bool:
        return self._lines > 2 * len(self._book) + COMPACT_SLACK

    def _compact(self) -> None:
        temporary = self._path.with_name(self._path.name + ".tmp")
        with temporary.open("wb") as out:
            for tenant, user, question, outcomes in self._book.questions():
                tally = {memory_id: list(counts) for memory_id, counts in outcomes.items()}
                line = {"tenant": tenant, "user": user, "question": question, "tally": tally}
                out.write(orjson.dumps(line) + b"\n")
        self.close()
        os.replace(temporary, self._path)
        self._file = self._path.open("ab")
        self._lines = len(self._book)


def _replay(book: QuestionOutcomes, line: bytes) -> None:
    """Apply one journal line; raises ``ValueError``, ``KeyError`` or ``TypeError`` on a
    malformed one."""
    body = orjson.loads(line)
    if not isinstance(body, dict):
        raise TypeError("a journal line is an object")
    if "tally" not in body:
        book.apply(news_from_bytes(line))
        return
    tally = {
        str(memory_id): (float(useful), float(not_useful))
        for memory_id, (useful, not_useful) in body["tally"].items()
    }
    book.tally(str(body["tenant"]), str(body["user"]), str(body["question"]), tally)
