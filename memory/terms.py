"""The words BM25 and confidence match on: lowercase, stopwords out, crude English stems.

Pure functions of the text, so cached: a stem per distinct word (a vocabulary is small;
stemming the ~50 candidates of a search was a sixth of its time at 10k memories) and the
term set per recently ranked text (a user's memories come back as candidates search after
search, and tokenising the pool is most of what confidence's features cost).
"""

from __future__ import annotations

import functools
import re

__all__ = ["stem", "term_set", "terms"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_STOPWORDS = frozenset(
    "a about all also am an and any are as at be been but by can could did do does for from "
    "had has have he her his i if in into is it its me my no not of on or our she so than "
    "that the their them then there these they this to was we were what when where which "
    "who whom why will with would you your yours "
    # Question and auxiliary words: "how many", "what kind of", "did … go" carry no topic, and
    # a question is made of them ("How long has …" matched every "long time no see").
    "how many much kind type sort some other both each just get got go going went done "
    "doing having ever".split()
)


def terms(text: str) -> list[str]:
    """BM25 terms: lowercase words without stopwords, reduced to a crude stem."""
    return [term for word in _WORD.findall(text.lower()) if (term := _term(word))]


@functools.lru_cache(maxsize=1 << 16)
def _term(word: str) -> str:
    """A lowercase word's term, "" for a stopword: one cached call a word (tokenising a 10k
    scope at load spent half its time in the uncached suffix and stopword checks)."""
    word = word.removesuffix("'s")
    return "" if word in _STOPWORDS else stem(word)


_DOUBLED = re.compile(r"([b-df-hj-km-np-tv-z])\1$")


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A small English suffix stripper: "submitted", "submitting", "submits" → "submit".

    Not a linguist's stemmer: it only has to map a word's common inflections to one key,
    and it may map a few unrelated words together (BM25 tolerates that far better than
    missing "painted" for "painting"). A final ``e`` is dropped everywhere so that "make"
    and "making" meet at "mak". No ``-ly``: it takes "family" down with "really".
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if _DOUBLED.search(word) and not word.endswith(("ll", "ss", "zz")):
                word = word[:-1]
            break
    return word.removesuffix("e") if len(word) > 3 else word


@functools.lru_cache(maxsize=1 << 14)
def term_set(text: str) -> frozenset[str]:
    """The distinct terms of ``text`` (what confidence's query coverage compares)."""
    return frozenset(terms(text))
