"""The confidence model: a fixed logistic over plain features."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from policies.confidence import ConfidenceFeatures, confidence, speculative

# A recall that found its target: the best memory stands out, both retrievers agree on it,
# and it holds the query's words.
FOUND = ConfidenceFeatures(margin=0.45, agreement=0.6, keyword_strength=2.5, coverage=1.0)
# A recall that found nothing in particular.
LOST = ConfidenceFeatures(margin=0.05, agreement=0.0, keyword_strength=0.0, coverage=0.0)


def test_a_clear_hit_is_confident_and_a_miss_is_not() -> None:
    assert confidence(FOUND) > 0.9
    assert confidence(LOST) < 0.1


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [
        ("margin", 0.05, 0.4),
        ("agreement", 0.0, 0.8),
        ("keyword_strength", 0.5, 2.5),
        ("coverage", 0.0, 1.0),
        ("names_date", False, True),
        ("usefulness", 0.2, 0.9),
    ],
)
def test_each_sign_of_a_hit_raises_confidence(field: str, low: Any, high: Any) -> None:
    middle = ConfidenceFeatures(margin=0.2, agreement=0.2, keyword_strength=1.2, coverage=0.5)
    below = confidence(dataclasses.replace(middle, **{field: low}))
    above = confidence(dataclasses.replace(middle, **{field: high}))
    assert 0.0 < below < above < 1.0


@pytest.mark.parametrize(
    ("field", "value"), [("speculative", True), ("several_people", True), ("misattribution", 0.1)]
)
def test_signs_of_a_hard_or_mismatched_question_lower_confidence(field: str, value: Any) -> None:
    plain = ConfidenceFeatures(margin=0.2, agreement=0.2, keyword_strength=1.2, coverage=0.5)
    assert confidence(dataclasses.replace(plain, **{field: value})) < confidence(plain)


def test_a_clear_misattribution_outweighs_a_clear_hit() -> None:
    # Someone else's statement matching the query half again as well as the named person's
    # own: the search found a fact, but not theirs.
    assert confidence(dataclasses.replace(FOUND, misattribution=0.5)) < 0.2


def test_no_usefulness_history_is_neutral() -> None:
    assert confidence(dataclasses.replace(FOUND, usefulness=0.5)) == confidence(FOUND)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Would Melanie enjoy a song by Vivaldi?", True),
        ("What might John's financial status be?", True),
        ("Is it likely that Nate has friends besides Joanna?", True),
        ("Does John live close to a beach or the mountains?", True),
        ("When did Melanie paint a sunrise?", False),
        ("What is Caroline's identity?", False),
        ("Where did Maria go skiing?", False),
        ("", False),
    ],
)
def test_speculative_questions_are_recognised(query: str, expected: bool) -> None:
    assert speculative(query) is expected
