"""Supersession policy: which newer first-person fact replaces which older one.

"I moved to Porto" must win over "I live in Lyon" without an LLM, so this module reads a
handful of high-value *slots* out of plain first-person statements with a conservative rule
set and decides, by time, which claim on a slot is current. Pure functions only; the memory
engine asks (:mod:`memory.ingest`), this module answers.

Why conservative: a false supersession hides a true memory from recall, which is worse than a
missed one (both memories then stay searchable and ranking sorts them out). So
:func:`extract_fact` returns ``None`` whenever it is unsure:

- only the user speaks for the user: an ``Assistant:`` turn (or ``role="assistant"``) is
  never a fact; a ``User:`` prefix (captured turns) is stripped;
- only short texts (at most :data:`MAX_SENTENCES` sentences, :data:`MAX_CHARS` characters)
  carry a fact, because superseding a long memory would hide everything else it says; and
  a text whose sentences claim more than one fact carries none;
- the statement must open its sentence (after fillers like "Actually,"), in the first
  person singular ("we moved" may be a partner's move);
- negations, hedges, questions, plans and the past ("not", "maybe", "?", "going to",
  "used to", "would", …) disqualify the sentence;
- places, employers, names and cars must be proper nouns (capitalised): "I live in Lyon"
  is a residence, "I live in an apartment" is not;
- redaction placeholders (``[EMAIL]``, ``[PHONE]``) are not values: two masked numbers
  cannot be told apart.

Slots: ``residence``, ``employer``, ``occupation``, ``name``, ``partner``, ``age``,
``birthday``, ``car``, ``email``, ``phone``, ``<pet>_name`` and ``favourite:<thing>``.

Known limit: a country after a city ("I live in Lyon" then "I live in France") counts as a
move, because nothing here knows geography.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "MAX_CHARS",
    "MAX_SENTENCES",
    "Claim",
    "Fact",
    "Supersession",
    "extract_fact",
    "resolve",
    "triggers",
]

MAX_SENTENCES = 3
MAX_CHARS = 300


@dataclass(frozen=True)
class Fact:
    """A slot of the user's profile and its normalised value (lowercase, single-spaced)."""

    slot: str
    value: str


@dataclass(frozen=True)
class Claim:
    """A memory claiming a fact, as of its ``created_at``."""

    id: str
    fact: Fact
    created_at: datetime


@dataclass(frozen=True)
class Supersession:
    """Memory ``old`` is superseded by memory ``new`` on ``slot``."""

    old: str
    new: str
    slot: str


# -- text shapes -------------------------------------------------------------------------
_ROLE = re.compile(r"^\s*(user|assistant|system|tool|human|ai)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_FILLER = (
    r"^(?:(?:actually|also|and|but|btw|by\s+the\s+way|fyi|just\s+so\s+you\s+know|so|well|oh|"
    r"ok|okay|hey|hi|hello|update|news|quick\s+update|now|anyway)\b[\s,:;!-]*)*"
)
_ADV = r"(?:(?:just|recently|now|currently|finally|actually|still|officially)\s+)?"
_I = rf"i\s+{_ADV}"
_IM = rf"i(?:'m|\s+am)\s+{_ADV}"
# A proper noun: capitalised words (digits allowed after the first, for "Model 3"), joined by
# the lowercase particles of place names ("Rio de Janeiro", "Stratford upon Avon").
# Case-sensitive inside the otherwise case-insensitive rules.
_PROPER = (
    r"(?P<v>(?-i:(?:[Tt]he\s+)?[A-Z][\w'&.-]*(?:\s+(?:(?:de|da|do|del|della|la|le|of|on|upon|"
    r"am|an|sur|en|y)\s+)?(?:[A-Z0-9][\w'&.-]*))*))"
)
_PHRASE = r"(?P<v>[\w'-]+(?:\s+[\w'-]+){0,4})"
_RELATION = r"wife|husband|partner|spouse|girlfriend|boyfriend|fianc[eé]{1,2}"
_PET = r"dog|cat|puppy|kitten|horse|parrot|rabbit|hamster|bird|fish|turtle"
_NAMED = r"(?:'s\s+name\s+is|\s+is\s+called|\s+is\s+named)"

# Anything here makes a sentence unsure: negation, hedging, plans, conditions, the past.
# Lowercase "may" hedges; "May" is a month ("my birthday is May 3").
_UNSURE = re.compile(
    r"\?|n't\b|(?-i:\bmay\b)|(?<!since )\bthen\b|"
    r"\b(?:not|never|no\s+longer|anymore|any\s+more|used\s+to|would|could|might|"
    r"maybe|perhaps|probably|possibly|if|unless|until|whether|want|wanted|wants|hope|hoping|"
    r"plan|plans|planning|going\s+to|gonna|will|shall|thinking|considering|wish|someday|"
    r"soon|next|pretend|imagine|suppose|dream|dreamt|dreamed|hypothetically|lived|"
    r"worked|former|formerly|previous|previously|ex)\b|'ll\b|'d\b",
    re.IGNORECASE,
)
# Words that end a value: "Porto with my wife", "a nurse at the hospital".
_VALUE_STOP = frozenset(
    [
        "at",
        "for",
        "in",
        "with",
        "and",
        "or",
        "but",
        "since",
        "because",
        "from",
        "on",
        "now",
        "so",
        "which",
        "who",
        "where",
        "as",
        "by",
        "to",
        "after",
        "before",
        "this",
        "last",
        "these",
        "days",
        "too",
    ]
)
_NOT_NAMES = frozenset(
    [
        "i",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "tonight",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "mom",
        "mum",
        "dad",
        "sir",
        "madam",
    ]
)
_MONTH = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b|\d", re.IGNORECASE
)
# "I live in Lyon and Paris": two values for one slot is no value at all.
_SECOND_VALUE = re.compile(r"^\s*(?:,\s*)?(?:and|or|&|/)\s+(?-i:[A-Z])", re.IGNORECASE)
_EMAIL = re.compile(r"^[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}$", re.IGNORECASE)


@dataclass(frozen=True)
class _Rule:
    slot: str  # may use {k}: filled from the pattern's ``k`` group
    pattern: re.Pattern[str]
    kind: str  # proper | phrase | name | number | date | email | phone


def _rule(slot: str, body: str, kind: str) -> _Rule:
    # Case-insensitive for the verbs, but the value groups check their own capitals below.
    return _Rule(slot, re.compile(_FILLER + body, re.IGNORECASE), kind)


_RULES: tuple[_Rule, ...] = (
    _rule("residence", rf"{_I}(?:live|reside)\s+in\s+{_PROPER}", "proper"),
    _rule("residence", rf"{_IM}(?:living|based|located|settled)\s+in\s+{_PROPER}", "proper"),
    _rule("residence", rf"i(?:'ve|\s+have)\s+{_ADV}been\s+living\s+in\s+{_PROPER}", "proper"),
    _rule("residence", rf"(?:{_I}|i(?:'ve|\s+have)\s+{_ADV})(?:moved|relocated)\s+to\s+{_PROPER}", "proper"),
    _rule("employer", rf"{_I}work\s+(?:at|for)\s+{_PROPER}", "proper"),
    _rule("employer", rf"(?:{_IM}|i(?:'ve|\s+have)\s+been\s+)working\s+(?:at|for)\s+{_PROPER}", "proper"),
    _rule("employer", rf"{_I}(?:got|have|started|landed)\s+a\s+(?:new\s+)?job\s+(?:at|with)\s+{_PROPER}", "proper"),
    _rule("employer", rf"{_I}(?:started|began)\s+working\s+(?:at|for)\s+{_PROPER}", "proper"),
    _rule("employer", rf"{_I}joined\s+{_PROPER}\s+as\b", "proper"),
    _rule("employer", rf"my\s+(?:new\s+)?employer\s+is\s+{_PROPER}", "proper"),
    _rule("occupation", rf"{_I}work\s+as\s+(?:an?\s+)?{_PHRASE}", "phrase"),
    _rule("occupation", rf"my\s+(?:job|job\s+title|profession|occupation)\s+is\s+(?:an?\s+)?{_PHRASE}", "phrase"),
    _rule("name", rf"my\s+name\s+is\s+{_PROPER}", "name"),
    _rule("name", rf"(?:please\s+)?call\s+me\s+{_PROPER}", "name"),
    _rule("name", rf"{_I}go\s+by\s+{_PROPER}", "name"),
    _rule("partner", rf"my\s+(?:{_RELATION}){_NAMED}\s+{_PROPER}", "name"),
    _rule("partner", rf"{_IM}married\s+to\s+{_PROPER}", "name"),
    _rule("{k}_name", rf"my\s+(?P<k>{_PET}){_NAMED}\s+{_PROPER}", "name"),
    _rule("favourite:{k}", rf"my\s+(?:all-time\s+|absolute\s+)?favou?rite\s+(?P<k>[a-z]+(?:\s+[a-z]+)?)\s+is\s+{_PHRASE}", "phrase"),
    _rule("birthday", rf"my\s+birthday\s+is\s+(?:on\s+)?{_PHRASE}", "date"),
    _rule("age", rf"{_IM}(?P<v>\d{{1,3}})\s+years?\s+old", "number"),
    _rule("age", rf"{_I}turned\s+(?P<v>\d{{1,3}})\b", "number"),
    _rule("car", rf"{_I}drive\s+an?\s+{_PROPER}", "proper"),
    _rule("car", rf"my\s+(?:new\s+)?car\s+is\s+an?\s+{_PROPER}", "proper"),
    _rule("email", r"my\s+(?:new\s+)?(?:e-?mail|e-?mail\s+address)\s+is\s+(?P<v>\S+)", "email"),
    _rule("phone", r"my\s+(?:new\s+)?(?:phone|phone\s+number|mobile|mobile\s+number|cell|number)\s+is\s+(?P<v>\+?[\d(][\d\s().-]{5,}\d)", "phone"),
)  # fmt: skip

# Lowercase substrings a memory on each slot family must contain: what the engine filters
# stored memories by before reading them, so a lookup never reads all of a user's memories.
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "residence": ("live in", "living in", "moved to", "relocated to", "based in", "reside in",
                  "located in", "settled in"),
    "employer": ("work at", "work for", "working at", "working for", "job at", "job with",
                 "joined", "employer is"),
    "occupation": ("work as", "job is", "job title is", "profession is", "occupation is"),
    "name": ("name is", "call me", "go by"),
    "partner": ("name is", "is called", "is named", "married to"),
    "pet": ("name is", "is called", "is named"),
    "favourite": ("favourite", "favorite"),
    "birthday": ("birthday",),
    "age": ("years old", "year old", "turned"),
    "car": ("drive a", "car is"),
    "email": ("mail",),
    "phone": ("phone", "mobile", "cell", "number is"),
}  # fmt: skip
# A cheap first look, so that most texts cost a few substring tests (a case-insensitive
# regex alternation of these is several times slower).
_ALL_TRIGGERS = tuple(sorted({t for family in _TRIGGERS.values() for t in family}))


def triggers(slot: str) -> tuple[str, ...]:
    """Lowercase substrings that every statement on ``slot`` contains (for store filters)."""
    family = slot.split(":", 1)[0]
    if family.endswith("_name"):
        family = "pet"
    return _TRIGGERS.get(family, ())


def extract_fact(content: str, role: str | None = None) -> Fact | None:
    """The one profile fact a short first-person user statement makes, else ``None``.

    ``role`` is the speaker when known (captured turns carry it in metadata); a ``User:`` or
    ``Assistant:`` prefix in the text is honoured too.
    """
    if role is not None and role.lower() != "user":
        return None
    text = content.replace("\u2019", "'").strip()
    prefix = _ROLE.match(text)
    if prefix is not None:
        if prefix.group(1).lower() not in ("user", "human"):
            return None
        text = text[prefix.end() :]
    if len(text) > MAX_CHARS:
        return None
    lowered = text.lower()
    if not any(t in lowered for t in _ALL_TRIGGERS):
        return None
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > MAX_SENTENCES:
        return None
    facts = {fact for s in sentences if (fact := _sentence_fact(s)) is not None}
    return facts.pop() if len(facts) == 1 else None


def _sentence_fact(sentence: str) -> Fact | None:
    found = None
    lowered = sentence.lower()
    for rule in _RULES:
        if not any(t in lowered for t in triggers(rule.slot)):
            continue  # cheaper than trying the pattern
        match = rule.pattern.match(sentence)
        if match is None:
            continue
        if _UNSURE.search(sentence):
            return None
        fact = _fact(rule, match)
        if fact is None:
            return None  # a statement we recognise but cannot read: unsure
        if found is not None and found != fact:
            return None
        found = fact
    return found


def _fact(rule: _Rule, match: re.Match[str]) -> Fact | None:
    value = _value(rule.kind, match.group("v"))
    if value is None or _SECOND_VALUE.match(match.string[match.end() :]):
        return None
    key = match.groupdict().get("k")
    slot = rule.slot.format(k=_thing(key)) if key else rule.slot
    return Fact(slot, value)


def _thing(word: str) -> str:
    # "favorite color" and "favourite colour" are one slot; plurals are not singularised
    # because "is" after them already rules most of them out.
    word = " ".join(word.lower().split())
    return {"color": "colour", "puppy": "dog", "kitten": "cat"}.get(word, word)


def _value(kind: str, raw: str) -> str | None:
    raw = raw.strip().rstrip(".,;:!")
    if kind == "email":
        return raw.lower() if _EMAIL.match(raw) else None
    if kind == "phone":
        digits = re.sub(r"\D", "", raw)
        return digits if 7 <= len(digits) <= 15 else None
    if kind == "number":
        return raw if 0 < int(raw) <= 120 else None
    if kind in ("proper", "name"):
        return _proper(raw, is_name=kind == "name")
    words = _until_stop(raw.lower().split())
    if not words:
        return None
    value = " ".join(words)
    if kind == "date" and _MONTH.search(value) is None:
        return None  # "my birthday is tomorrow" names no date
    return value


def _proper(raw: str, *, is_name: bool) -> str | None:
    words = raw.split()
    if words and words[0].lower() == "the":
        words = words[1:]
    words = [w.rstrip(".,;:!'") for w in words]
    if not words or not words[0][:1].isupper() or len(words) > 5:
        return None
    if is_name and (words[0].lower() in _NOT_NAMES or len(words) > 3):
        return None
    return " ".join(words).lower()


def _until_stop(words: Sequence[str]) -> list[str]:
    out = []
    for word in words:
        word = word.strip(".,;:!'\"")
        if not word or word in _VALUE_STOP:
            break
        out.append(word)
    return out


def resolve(new: Claim, existing: Sequence[Claim]) -> list[Supersession]:
    """What changes when ``new`` joins the live ``existing`` claims of the same user.

    Newest wins, strictly by ``created_at``: if a live claim on the slot with another value
    is newer than ``new`` (an old fact imported late), ``new`` is the one superseded, by the
    newest such claim; otherwise ``new`` supersedes every strictly older claim on the slot
    with another value. Same value or the same instant: nothing changes (not a
    contradiction, or no way to tell which is current).
    """
    rivals = [
        c for c in existing
        if c.id != new.id and c.fact.slot == new.fact.slot and c.fact.value != new.fact.value
    ]  # fmt: skip
    newer = [c for c in rivals if c.created_at > new.created_at]
    if newer:
        winner = max(newer, key=lambda c: (c.created_at, c.id))
        return [Supersession(old=new.id, new=winner.id, slot=new.fact.slot)]
    return [
        Supersession(old=c.id, new=new.id, slot=new.fact.slot)
        for c in sorted(rivals, key=lambda c: (c.created_at, c.id))
        if c.created_at < new.created_at
    ]
