"""The supersession rule set: slot extraction (conservative) and newest-wins resolution."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.supersession import Claim, Fact, Supersession, extract_fact, resolve, triggers


@pytest.mark.parametrize(
    ("text", "slot", "value"),
    [
        ("I live in Lyon.", "residence", "lyon"),
        ("User: I moved to Porto.", "residence", "porto"),
        ("user: I've relocated to Rio de Janeiro", "residence", "rio de janeiro"),
        ("Actually, I live in Porto now", "residence", "porto"),
        ("I\u2019m based in Berlin but travel a lot.", "residence", "berlin"),
        ("I'm living in New York City with my wife", "residence", "new york city"),
        ("I moved to Porto since then", "residence", "porto"),
        ("I work at Google as an engineer.", "employer", "google"),
        ("I just started working at Initech", "employer", "initech"),
        ("I got a new job at Globex!", "employer", "globex"),
        ("I joined Acme as a designer", "employer", "acme"),
        ("My employer is the BBC", "employer", "bbc"),
        ("I work as a nurse at the hospital", "occupation", "nurse"),
        ("My name is Sam Smith.", "name", "sam smith"),
        ("Please call me Ishmael", "name", "ishmael"),
        ("My wife's name is Anna", "partner", "anna"),
        ("I'm married to Jo", "partner", "jo"),
        ("My dog's name is Rex", "dog_name", "rex"),
        ("My puppy is called Bella", "dog_name", "bella"),
        ("My favourite colour is blue", "favourite:colour", "blue"),
        ("My favorite color is dark blue.", "favourite:colour", "dark blue"),
        ("My birthday is May 3rd", "birthday", "may 3rd"),
        ("I'm 34 years old", "age", "34"),
        ("I drive a Tesla Model 3", "car", "tesla model 3"),
        ("My email is sam@example.com.", "email", "sam@example.com"),
        ("My phone number is +33 6 12 34 56 78", "phone", "33612345678"),
        ("I live in Lyon. I love it here.", "residence", "lyon"),
        ("Human: I live in Lyon", "residence", "lyon"),
    ],
)
def test_extracts_first_person_facts(text: str, slot: str, value: str) -> None:
    assert extract_fact(text) == Fact(slot, value)
    assert any(t in text.lower().replace("\u2019", "'") for t in triggers(slot))


@pytest.mark.parametrize(
    "text",
    [
        "Assistant: You live in Lyon.",  # not the user speaking
        "Assistant: I moved to Porto.",
        "I live in an apartment",  # not a place name
        "I don't live in Lyon anymore",  # negation
        "I used to live in Lyon",  # the past
        "I lived in Lyon for years",
        "Do I live in Lyon?",  # a question
        "I'm thinking of moving to Porto",  # a plan
        "I may move to Porto",
        "I will move to Porto next year",
        "If I lived in Porto, I'd surf.",
        "Maybe I live in Lyon",  # hedge
        "We moved to Porto",  # not first person singular
        "My friend lives in Lyon",
        "He said I live in Lyon",  # not at the start of the sentence
        "I live in Lyon and Paris",  # two values
        "I live in Lyon. I work at Acme.",  # two facts: which one would it be?
        "I work for myself",
        "I joined the gym",
        "I joined Toastmasters",  # joining is not employment without "as"
        "Call me later",
        "Call me Monday",
        "My wife is Italian",
        "My birthday is tomorrow",
        "My email is [EMAIL]",  # redaction placeholders are not values
        "My phone number is [PHONE]",
        "I drive a lot",
        "user: i live in lyon",  # lowercase: cannot tell a name
        "I live in Lyon. " * 4,  # too long to be hidden safely
        "Hello there, how are you?",
        "",
    ],
)
def test_unsure_statements_are_not_facts(text: str) -> None:
    assert extract_fact(text) is None


def test_role_argument_wins_over_text() -> None:
    assert extract_fact("I moved to Porto.", role="assistant") is None
    assert extract_fact("I moved to Porto.", role="user") == Fact("residence", "porto")


def _claim(id_: str, value: str, year: int, slot: str = "residence") -> Claim:
    return Claim(id_, Fact(slot, value), datetime(year, 1, 1, tzinfo=UTC))


def test_newer_claim_supersedes_older_contradicting_ones() -> None:
    new = _claim("porto", "porto", 2024)
    existing = [
        _claim("lyon", "lyon", 2020),
        _claim("paris", "paris", 2022),
        _claim("lyon2", "porto", 2021),
        _claim("job", "acme", 2019, slot="employer"),
    ]
    assert resolve(new, existing) == [
        Supersession(old="lyon", new="porto", slot="residence"),
        Supersession(old="paris", new="porto", slot="residence"),
    ]


def test_older_claim_is_superseded_by_the_newest_rival() -> None:
    old = _claim("lyon", "lyon", 2019)
    existing = [_claim("porto", "porto", 2024), _claim("paris", "paris", 2022)]
    assert resolve(old, existing) == [Supersession(old="lyon", new="porto", slot="residence")]


def test_same_value_or_same_instant_changes_nothing() -> None:
    new = _claim("a", "porto", 2024)
    assert resolve(new, [_claim("b", "porto", 2020)]) == []
    assert resolve(new, [_claim("c", "lyon", 2024)]) == []
    assert resolve(new, [new]) == []
