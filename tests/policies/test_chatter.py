"""Which captured turns say nothing on their own."""

from __future__ import annotations

import pytest

from policies.chatter import is_chatter


@pytest.mark.parametrize(
    "text",
    ["ok", "Okay, thanks!", "Got it.", "Thank you so much :)", "Sounds good, will do!",
     "You're welcome.", "Hi!", "Yes", "No problem at all", "👍", "", "Great, that's perfect."],
)  # fmt: skip
def test_acknowledgements_greetings_and_thanks_are_chatter(text: str) -> None:
    assert is_chatter(text)


@pytest.mark.parametrize(
    "text",
    ["ok, 7pm works", "Thanks, Mel!", "No, that's wrong", "Yes, I'm vegetarian",
     "Great, I passed the exam!", "ok merci", "I moved since", "Got it: Biscuit."],
)  # fmt: skip
def test_a_single_word_of_content_keeps_a_turn(text: str) -> None:
    assert not is_chatter(text)
