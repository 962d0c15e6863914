"""Implicit signals: regenerates, corrections, answers that use a memory."""

from __future__ import annotations

import pytest

from policies.signals import is_correction, is_regenerate, used_memories


def test_regenerate_is_the_same_turn_again() -> None:
    assert is_regenerate("Where do I live?", "  where do I live ")
    assert not is_regenerate("Where do I live?", "Where do I work?")
    assert not is_regenerate(None, "hi")


@pytest.mark.parametrize(
    "text",
    [
        "No, that's wrong.",
        "that's outdated, I moved since",
        "I moved to Porto since then",
        "Not anymore.",
        "Actually, I live in Porto now",
        "You're wrong about that",
    ],
)
def test_corrections(text: str) -> None:
    assert is_correction(text)


@pytest.mark.parametrize(
    "text",
    [
        "Where is a good restaurant?",
        "No worries, thanks!",
        "That's great news",
        "I moved the meeting",
    ],
)
def test_not_corrections(text: str) -> None:
    assert not is_correction(text)


def test_usage_is_distinctive_overlap() -> None:
    memories = [
        ("m1", "User: My greyhound Biscuit loves beaches"),
        ("m2", "User: I work at the aquarium in Lisbon"),
    ]
    answer = "Biscuit the greyhound would love the beaches near Porto!"
    assert used_memories(answer, memories) == ["m1"]
