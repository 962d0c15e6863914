"""Misattribution: does the person a query names say what it asks about, or someone else?

A memory written as ``"<Speaker>: <text>"`` (captured turns are ``User: …`` and
``Assistant: …``; imported transcripts name their people) states facts about its speaker. A
question that names one speaker but whose words are best matched by another speaker's
statements pairs a person with someone else's fact: "What did Caroline realise after her
charity race?" when Melanie ran it. Retrieval finds Melanie's turn all the same, and every
other confidence feature says the recall went well; only the pairing is wrong.

Pure functions over the recalled memories' texts and cosines (the ones ranked for injection:
the pool's weaker half only added noise and cost). ``people`` counts the query's *named
speakers*: its capitalised words that name the speaker of a recalled memory (a question about
two people spans several memories, and is answered less often). The misattribution, in
``[0, 1]``:

1. no named speaker, or nobody else in the pool to compare with: 0, no sign either way;
2. each candidate's match with the rest of the query (the *attribute* words): the IDF-weighted
   share of them among its statements, mixed with its cosine similarity to the whole query;
3. the best match among the named speakers' memories against the best among the others'; the
   measure is how far the others' is ahead, relative to the best overall (0 when it is not).

Only statements count (step 2): a question ("What's your favourite dance?") asks and a
sentence addressed to someone ("You look great on stage") is about the listener; both echo
the query's words without saying anything about their own speaker. On the LoCoMo development
split (``bench/confidence_fit.py``) this measure told the adversarial questions apart from the
answerable ones with an AUROC of 0.88 (0.79 counting every sentence), about the same in each
of the four conversations.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from memory.terms import term_set

__all__ = ["Attribution", "attribution", "speaker"]

Floats = npt.NDArray[np.float64]

# Share of the cosine in a candidate's match: the words decide (a name in the query pulls the
# named speaker's turns up in cosine), the cosine breaks ties and catches paraphrase.
_COSINE_SHARE = 0.3
_SPEAKER = re.compile(r"^\s*([A-Z][\w'’ .-]{0,40}?):\s")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself|ya)\b", re.IGNORECASE)
_CAPITALISED = re.compile(r"\b[A-Z][^\W_]*")


def _terms(text: str) -> frozenset[str]:
    return term_set(text.replace("’", "'"))


@lru_cache(maxsize=16_384)
def _parsed(content: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(speaker's name terms, terms of the whole text, terms of its statements), per content."""
    match = _SPEAKER.match(content)
    text = content[match.end() :] if match else content
    statements = [
        s
        for s in _SENTENCE.split(text)
        if s.strip() and not s.rstrip().endswith("?") and not _SECOND_PERSON.search(s)
    ]
    name = _terms(match.group(1)) if match else frozenset()
    return name, _terms(text), _terms(" ".join(statements))


def speaker(content: str) -> frozenset[str]:
    """The stemmed name terms of the speaker of ``"<Speaker>: <text>"`` (empty without one)."""
    return _parsed(content)[0]


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a query names among the pool's speakers, and whether their statements answer it."""

    people: int = 0  # distinct speakers of the pool the query names
    misattribution: float = 0.0  # in [0, 1]; 0 is no sign either way


def attribution(query: str, contents: Sequence[str], cosine: Floats) -> Attribution:
    """Measure :class:`Attribution` of the recalled memories (their texts and cosines)."""
    # The query's capitalised words that name a speaker of the pool: the people it asks about.
    names = _terms(" ".join(_CAPITALISED.findall(query)))
    if not names:
        return Attribution()
    parsed = [_parsed(content) for content in contents]
    named = [p[0] & names for p in parsed]
    people = set(named) - {frozenset()}
    theirs = np.fromiter(map(bool, named), bool, len(named))
    if not people or theirs.all():
        return Attribution(len(people))
    attribute = _terms(query) - frozenset().union(*people)
    if not attribute:
        return Attribution(len(people))
    match = _match(attribute, parsed, np.asarray(cosine, np.float64))
    best = float(match.max())
    ahead = float(match[~theirs].max()) - float(match[theirs].max())
    return Attribution(len(people), max(0.0, ahead / best) if best > 0 else 0.0)


def _match(
    attribute: frozenset[str],
    parsed: list[tuple[frozenset[str], frozenset[str], frozenset[str]]],
    cosine: Floats,
) -> Floats:
    """Each candidate's match with the attribute words (statements) and with the query."""
    n = len(parsed)
    # Document frequency over whole texts: a word every turn of the pool uses says little.
    # (Set intersections, not a scan per word: this runs on every recall that names someone.)
    frequency = Counter(t for p in parsed for t in p[1] & attribute)
    weight = {t: math.log1p(n / (1 + frequency[t])) for t in attribute}
    total = sum(weight.values())
    words = np.fromiter(
        (sum(map(weight.__getitem__, p[2] & attribute)) for p in parsed), np.float64, n
    )
    words /= total
    top_words = float(words.max())
    cosine = np.clip(cosine, 0.0, None)
    top_cosine = float(cosine.max())
    return (1 - _COSINE_SHARE) * (words / top_words if top_words > 0 else words) + (
        _COSINE_SHARE * (cosine / top_cosine if top_cosine > 0 else cosine)
    )
