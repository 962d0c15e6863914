"""Redaction policy: PII and secrets replaced with typed placeholders before anything is stored.

Pure: text in, text out. Patterns run most-specific first (secrets, then card numbers, then
emails, then phone numbers) so that a card number is never half-eaten by the phone pattern.

What is caught, and the trade-offs taken:

- ``[SECRET]``: OpenAI/Anthropic style ``sk-…`` keys, AWS access key ids (``AKIA…``), GitHub
  (``ghp_…`` etc.) and Slack (``xox?-…``) tokens, ``Bearer <token>`` credentials, and
  ``password=…`` / ``api_key: …`` style assignments.
- ``[CARD]``: 13–19 digits, optionally grouped by spaces or dashes, that pass the Luhn check;
  a random 16-digit order number fails Luhn nine times in ten and is kept.
- ``[EMAIL]``: the usual ``local@domain.tld`` shape.
- ``[PHONE]``: numbers written with a leading ``+``, a parenthesised area code, the NANP
  ``555-123-4567`` shape, or at least 10 digits in separated groups. Dates (8 digits) and
  IPv4 addresses are deliberately left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["KINDS", "Redacted", "RedactionPolicy", "luhn_valid", "redact"]

KINDS = ("secret", "card", "email", "phone")

_SECRET = re.compile(
    r"""
    \bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{16,}          # sk-…, sk-proj-…, sk-ant-api03-…
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                      # AWS access key id
    | \bgh[pousr]_[A-Za-z0-9]{30,}\b                     # GitHub tokens
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                     # Slack tokens
    | (?i:\bbearer\s+)[A-Za-z0-9._~+/=\-]{16,}           # Authorization: Bearer …
    | (?i:\b(?:api[_-]?key|secret|token|password|passwd)\b\s*[:=]\s*)["']?[^\s"']{6,}["']?
    """,
    re.VERBOSE,
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,5}(?!\w)"
    r"|(?<![\w+])\+\d{8,15}(?!\w)"
)
_NANP = re.compile(r"^\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


@dataclass(frozen=True)
class RedactionPolicy:
    """Which kinds to redact; ``enabled=False`` turns the hook into the identity."""

    enabled: bool = True
    kinds: frozenset[str] = field(default_factory=lambda: frozenset(KINDS))


@dataclass(frozen=True)
class Redacted:
    """The redacted text and how many of each kind were replaced."""

    text: str
    counts: dict[str, int]

    @property
    def changed(self) -> bool:
        return bool(self.counts)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers (``digits`` holds digits only)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return len(digits) > 0 and total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if not 7 <= len(digits) <= 15 or _IPV4.match(match):
        return False
    explicit = match.startswith("+") or "(" in match or bool(_NANP.match(match))
    return explicit or len(digits) >= 10


def redact(text: str, policy: RedactionPolicy = RedactionPolicy()) -> Redacted:
    """Replace every PII or secret match allowed by ``policy`` with its placeholder."""
    if not policy.enabled or not text:
        return Redacted(text, {})
    counts: Counter[str] = Counter()
    steps = (
        ("secret", _SECRET, None),
        ("card", _CARD, _is_card),
        ("email", _EMAIL, None),
        ("phone", _PHONE, _is_phone),
    )
    for kind, pattern, accept in steps:
        if kind not in policy.kinds:
            continue

        def replace(match: re.Match[str], kind: str = kind, accept: object = accept) -> str:
            if callable(accept) and not accept(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return f"[{kind.upper()}]"

        text = pattern.sub(replace, text)
    return Redacted(text, dict(counts))
