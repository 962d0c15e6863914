from __future__ import annotations

import pytest

from policies.redaction import RedactionPolicy, luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe+work@example.co.uk today", "write to [EMAIL] today", "email"),
        ("call +44 20 7946 0958 please", "call [PHONE] please", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("call 555-123-4567", "call [PHONE]", "phone"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "card"),
        ("card 5500-0000-0000-0004", "card [CARD]", "card"),
        ("key sk-proj-AbCdEfGhIjKlMnOpQrSt123", "key [SECRET]", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]", "secret"),
        ("Authorization: Bearer abcdefghijklmnop.qrstuvwx", "Authorization: [SECRET]", "secret"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [SECRET]", "secret"),
        ("password = hunter2hunter2", "[SECRET]", "secret"),
    ],
)
def test_redacts_each_kind(text: str, expected: str, kind: str) -> None:
    result = redact(text)
    assert result.text == expected
    assert result.counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "meet on 2024-01-15 at 10:30",
        "server 192.168.100.200 is down",
        "order 4111 1111 1111 1112 shipped",  # fails Luhn: not a card
        "version 1.2.3 released, 42 users",
        "I have 3 cats and 12 dogs",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text).text == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("")


def test_policy_can_disable_or_select_kinds() -> None:
    text = "mail a@b.com or call 555-123-4567"
    assert redact(text, RedactionPolicy(enabled=False)).text == text
    only_email = redact(text, RedactionPolicy(kinds=frozenset({"email"})))
    assert only_email.text == "mail [EMAIL] or call 555-123-4567"


def test_several_in_one_text_are_counted() -> None:
    result = redact("a@b.com, c@d.org and 4111111111111111")
    assert result.counts == {"email": 2, "card": 1}
    assert "@" not in result.text and "4111" not in result.text
