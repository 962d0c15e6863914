"""Misattribution: the person a query names against whose statements match it."""

from __future__ import annotations

import numpy as np
import pytest

from memory.attribution import attribution, speaker

CHATTER = [
    "Caroline: I went to the pottery class with my cousin.",
    "Melanie: My kids love the beach in summer.",
    "Caroline: The library downtown has a new reading room.",
]


Pool = tuple[list[str], np.ndarray]


def misattribution(query: str, pool: Pool) -> float:
    return attribution(query, *pool).misattribution


def _pool(*contents: str) -> Pool:
    """The recalled memories: these (cosine 0.5) and some chatter of both people (0.2)."""
    return [*contents, *CHATTER], np.asarray([0.5] * len(contents) + [0.2] * len(CHATTER))


RACE = "Melanie: After the charity race last Saturday I realised self-care really matters."
QUESTION = "What did {} realise after the charity race?"


def test_a_question_naming_someone_else_than_who_said_it_is_misattributed() -> None:
    candidates = _pool(RACE)
    assert misattribution(QUESTION.format("Caroline"), candidates) > 0.5
    assert misattribution(QUESTION.format("Melanie"), candidates) == 0.0


def test_no_named_speaker_is_no_sign_either_way() -> None:
    candidates = _pool(RACE)
    assert misattribution("what did she realise after the charity race?", candidates) == 0.0
    # A capitalised word that nobody in the pool speaks as is not a person to attribute to.
    assert misattribution(QUESTION.format("Oslo"), candidates) == 0.0
    assert misattribution("", candidates) == 0.0
    assert misattribution("Caroline?", candidates) == 0.0  # nothing asked about her


def test_questions_and_sentences_addressed_to_someone_are_not_statements() -> None:
    # Melanie asks about Caroline's race and compliments her on it; Caroline's answer shares
    # few of the question's words. The fact is still Caroline's.
    candidates = _pool(
        "Melanie: What did you realise after the charity race?",
        "Melanie: You ran a charity race, so inspiring!",
        "Caroline: It taught me that self-care matters, honestly.",
    )
    assert misattribution(QUESTION.format("Caroline"), candidates) == 0.0
    counted = _pool(
        "Melanie: I realised a lot after the charity race.",
        "Caroline: It taught me that self-care matters, honestly.",
    )
    assert misattribution(QUESTION.format("Caroline"), counted) > 0.0


def test_the_measure_grows_with_how_far_the_other_speaker_is_ahead() -> None:
    query = QUESTION.format("Caroline")
    close = _pool(RACE, "Caroline: After the race I realised I need a break.")
    far = _pool(RACE, "Caroline: I need a break.")
    assert 0.0 < misattribution(query, close) < misattribution(query, far) <= 1.0


def test_everyone_in_the_pool_being_the_named_speaker_is_no_sign() -> None:
    alone = (["Caroline: I ran a charity race."], np.asarray([0.6]))
    assert misattribution(QUESTION.format("Caroline"), alone) == 0.0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Melanie: I ran a race.", {"melani"}),
        ("User: book the flight", {"user"}),
        ("Dr. Okafor: take two a day", {"dr", "okafor"}),
        ("no speaker here", set()),
        ("lowercase: is not a name", set()),
    ],
)
def test_the_speaker_is_the_leading_name(content: str, expected: set[str]) -> None:
    assert speaker(content) == expected


def test_people_counts_the_speakers_a_query_names() -> None:
    candidates = _pool(RACE)
    assert attribution("What do Caroline and Melanie both like?", *candidates).people == 2
    assert attribution("What did Melanie's cousin say?", *candidates).people == 1
    assert attribution("What did Oslo and the cousin say?", *candidates).people == 0
