"""Per-question outcomes: what feedback said about a memory for the question it was asked for.

A memory's usefulness counts (:mod:`memory.usefulness`) pool every question it was injected
for, but whether it helps depends on the question: most injected memories are the tail of a
ranking, noise for this question and perhaps the answer to another. Dropping memories on the
pooled counts made the set precise for the questions that got feedback and took the answers
away from the others (``bench/feedback_sim.py``: injected-evidence recall of questions never
fed back fell from 80% to 27% in five rounds). So the verdict "not useful" is also kept for
the question it was given for, and only that question stops getting the memory.

A question is known by its *key*: a hash of its stemmed, stopword-free terms, so the same
question asked again, in other words order or casing, is the same question, while a different
question is not (a paraphrase with other words starts afresh). Only keys and memory ids are
held, never text. The book lives in RAM, bounded (least recently asked questions go first),
per process: a restart forgets it and the pooled counts, which are durable, carry on.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from memory.terms import term_set
from memory.usefulness import evidence, rejected_for_question

__all__ = ["QuestionOutcomes", "question_key"]

# ~20 memories a question, ~100 bytes an entry: about 40 MB when full.
DEFAULT_CAPACITY = 20_000


def question_key(query: str) -> str:
    """The key of a recall query: its terms, as a set, hashed ("" for a query without terms)."""
    words = sorted(term_set(query))
    if not words:
        return ""
    return hashlib.blake2b("\0".join(words).encode(), digest_size=12).hexdigest()


class QuestionOutcomes:
    """Bounded map (tenant, user, question key) → per-memory (useful, not useful) evidence."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._questions: OrderedDict[tuple[str, str, str], dict[str, tuple[float, float]]] = (
            OrderedDict()
        )

    def record(
        self, tenant: str, user: str, question: str, ids: Iterable[str], feedback: bool | float
    ) -> None:
        """Add one outcome for these memories, injected for this question."""
        if not question:
            return
        useful, not_useful = evidence(feedback)
        key = (tenant, user, question)
        outcomes = self._questions.setdefault(key, {})
        self._questions.move_to_end(key)
        for memory_id in ids:
            was_useful, was_not = outcomes.get(memory_id, (0.0, 0.0))
            outcomes[memory_id] = (was_useful + useful, was_not + not_useful)
        while len(self._questions) > self._capacity:
            self._questions.popitem(last=False)

    def rejected(self, tenant: str, user: str, question: str) -> frozenset[str]:
        """The memories this question's feedback turned down."""
        outcomes = self._questions.get((tenant, user, question))
        if not outcomes:
            return frozenset()
        self._questions.move_to_end((tenant, user, question))
        return frozenset(m for m, (u, n) in outcomes.items() if rejected_for_question(u, n))

    def forget(self, tenant: str, user: str | None = None) -> None:
        """Drop what was learned for a user's questions (every user's, without one)."""
        for key in [k for k in self._questions if k[0] == tenant and user in (None, k[1])]:
            del self._questions[key]
