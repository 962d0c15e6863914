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
and every change is journaled to a file on this host (:mod:`memory.outcome_journal`), so a
restart keeps what feedback taught.

Replicas keep one book each and tell each other what they learn through an
:class:`OutcomeFeed` (Redis pub/sub in the proxy): a question fed back through one replica
stops getting the memory from all of them, and a forgotten user's questions are dropped
everywhere. The feed is best effort: a replica that missed a message (cut off, or started
later) may inject a turned-down memory for that question again, until the question's next
feedback turns it down there too; recall never waits for the feed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson

from memory.terms import term_set
from memory.usefulness import evidence, rejected_for_question

__all__ = [
    "Forgotten",
    "OutcomeFeed",
    "OutcomeNews",
    "QuestionOutcomes",
    "Verdict",
    "news_from_bytes",
    "news_to_bytes",
    "question_key",
]

# ~20 memories a question, ~100 bytes an entry: about 40 MB when full.
DEFAULT_CAPACITY = 20_000


def question_key(query: str) -> str:
    """The key of a recall query: its terms, as a set, hashed ("" for a query without terms)."""
    words = sorted(term_set(query))
    if not words:
        return ""
    return hashlib.blake2b("\0".join(words).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Feedback on the memories injected for one question of a user: useful or not, or a
    score in [-1, 1]."""

    tenant: str
    user: str
    question: str
    ids: tuple[str, ...]
    feedback: bool | float


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A user was forgotten, or with ``user`` None a whole tenant: what was learned for
    their questions goes too."""

    tenant: str
    user: str | None


OutcomeNews = Verdict | Forgotten


def news_to_bytes(news: OutcomeNews) -> bytes:
    if isinstance(news, Forgotten):
        return orjson.dumps({"tenant": news.tenant, "user": news.user, "forgotten": True})
    return orjson.dumps(
        {
            "tenant": news.tenant,
            "user": news.user,
            "question": news.question,
            "ids": list(news.ids),
            "feedback": news.feedback,
        }
    )


def news_from_bytes(raw: bytes) -> OutcomeNews:
    """Raises ``ValueError``, ``KeyError`` or ``TypeError`` on a malformed message."""
    body = orjson.loads(raw)
    tenant = str(body["tenant"])
    if body.get("forgotten"):
        return Forgotten(tenant, None if body["user"] is None else str(body["user"]))
    user = str(body["user"])
    feedback = body["feedback"]
    if not isinstance(feedback, bool):
        feedback = float(feedback)
        if not -1.0 <= feedback <= 1.0:
            raise ValueError(f"feedback {feedback} out of [-1, 1]")
    ids = tuple(str(i) for i in body["ids"])
    return Verdict(tenant, user, str(body["question"]), ids, feedback)


class OutcomeFeed(Protocol):
    """How a replica tells the others what feedback taught it, and hears what they learned."""

    async def publish(self, news: OutcomeNews) -> None:
        """Tell the other replicas; never raises (the feed is best effort)."""
        ...

    def subscribe(self, on_news: Callable[[OutcomeNews], None]) -> None:
        """``on_news`` for what every other replica publishes, on the event loop."""
        ...


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
        weight = evidence(feedback)
        self.tally(tenant, user, question, dict.fromkeys(ids, weight))

    def tally(
        self, tenant: str, user: str, question: str, outcomes: Mapping[str, tuple[float, float]]
    ) -> None:
        """Add (useful, not useful) evidence per memory for this question."""
        if not question:
            return
        key = (tenant, user, question)
        known = self._questions.setdefault(key, {})
        self._questions.move_to_end(key)
        for memory_id, (useful, not_useful) in outcomes.items():
            was_useful, was_not = known.get(memory_id, (0.0, 0.0))
            known[memory_id] = (was_useful + useful, was_not + not_useful)
        while len(self._questions) > self._capacity:
            self._questions.popitem(last=False)

    def __len__(self) -> int:
        """Questions held."""
        return len(self._questions)

    def questions(self) -> Iterator[tuple[str, str, str, dict[str, tuple[float, float]]]]:
        """(tenant, user, question key, evidence per memory), least recently asked first."""
        for (tenant, user, question), outcomes in self._questions.items():
            yield tenant, user, question, dict(outcomes)

    def apply(self, news: OutcomeNews) -> None:
        """What another replica learned (or this one: the same effect as the call it stands
        for)."""
        if isinstance(news, Forgotten):
            self.forget(news.tenant, news.user)
        else:
            self.record(news.tenant, news.user, news.question, news.ids, news.feedback)

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
