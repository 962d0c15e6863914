"""Implicit outcome signals: weaker evidence than explicit feedback, read from the traffic.

- a regenerate (the same user turn sent again in a session) counts against what was injected
  into the previous answer;
- a correction ("no, that's wrong", "that's outdated", "I moved since") counts against it too;
- an answer that uses a memory (its distinctive words show up in the answer) counts for it.

Each returns a signed weight in [-1, 1] that feeds the same usefulness counts as explicit
feedback (``useful`` = +1, ``not useful`` = -1), at a fraction of its strength.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REGENERATE_WEIGHT = -0.3
CORRECTION_WEIGHT = -0.5
USAGE_WEIGHT = 0.3

_CORRECTION = re.compile(
    r"(\bno\b[,.!]?\s+(that'?s|that is|it'?s|it is)\s+"
    r"(wrong|not right|incorrect|not true|outdated|old)"
    r"|\bthat'?s\s+(wrong|incorrect|not true|outdated|out of date|no longer true|not right)"
    r"|\bnot anymore\b|\bno longer\b|\bthat was before\b|\byou'?re wrong\b"
    r"|\bi('ve| have)?\s+(moved|changed|switched|quit|left)\b.*\b(since|now|anymore|already)\b"
    r"|\bactually,?\s+(i|my|it'?s|we)\b)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[\w']+")
_STOPWORDS = frozenset(
    {
        "the", "a", "an", "and", "or", "but", "if", "then", "than", "that", "this", "those",
        "these", "there", "their", "they", "them", "you", "your", "yours", "user", "assistant",
        "with", "from", "into", "onto", "about", "have", "has", "had", "was", "were", "will",
        "would", "could", "should", "what", "when", "where", "which", "while", "who", "whom",
        "whose", "why", "how", "just", "also", "very", "really", "some", "like", "been", "being",
        "does", "did", "doing", "done", "for", "not", "are", "is", "its", "it's", "i'm", "i've",
        "me", "my", "mine", "our", "ours", "we", "us", "he", "she", "his", "her", "hers", "him",
    }
)  # fmt: skip
_MIN_WORD = 4
USAGE_OVERLAP = 0.5


def _normalised(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def is_regenerate(previous_user_turn: str | None, user_turn: str) -> bool:
    return (
        previous_user_turn is not None
        and _normalised(previous_user_turn) == _normalised(user_turn) != ""
    )


def is_correction(user_turn: str) -> bool:
    return _CORRECTION.search(user_turn) is not None


def distinctive_words(text: str) -> frozenset[str]:
    words = (w for w in _WORD.findall(text.lower()) if len(w) >= _MIN_WORD)
    return frozenset(w for w in words if w not in _STOPWORDS)


def used_memories(answer: str, memories: Iterable[tuple[str, str]]) -> list[str]:
    """Ids of memories whose distinctive words mostly appear in the answer."""
    said = distinctive_words(answer)
    used = []
    for memory_id, content in memories:
        words = distinctive_words(content.partition(": ")[2] or content)
        if len(words) >= 2 and len(words & said) / len(words) >= USAGE_OVERLAP:
            used.append(memory_id)
    return used
