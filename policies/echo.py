"""What an answer copied from the recalled notes is not new memory.

Models quote what they were given: a note recited word for word ("As you said, my sister
Ada lives in Porto and keeps bees"), or, for a small local model, the whole note block with
its header. A paraphrase is the answer's own. Captured as it is, the
answer would store the notes again under the assistant's name, a newer copy that outlives
a correction of the original, and the block's own wording ("Recalled notes from earlier
conversations…") would come back as a note inside the next block. So before an answer is
captured, every run of ``MIN_COPIED_WORDS`` or more words that also appears in the block it
was given is cut out; an answer with almost nothing left is not captured at all. Pure.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

__all__ = ["MIN_COPIED_WORDS", "MIN_KEPT_WORDS", "without_recalled"]

# Eight words in a row are a copy, not a coincidence of phrasing ("I live in Lisbon" is four).
MIN_COPIED_WORDS = 8
# What is left of an answer with fewer words than this says nothing on its own ("Yes, ").
MIN_KEPT_WORDS = 4

_WORD = re.compile(r"\S+")
_EDGE_PUNCTUATION = "\"'()[]{}<>.,;:!?*_-—–`"


def _normal(word: str) -> str:
    return word.strip(_EDGE_PUNCTUATION).casefold()


def without_recalled(answer: str, recalled: str) -> str:
    """``answer`` without the word runs it copied from ``recalled``; "" if little is left."""
    if not answer or not recalled:
        return answer
    spans = [m.span() for m in _WORD.finditer(answer)]
    said = [_normal(answer[start:end]) for start, end in spans]
    given = [_normal(w) for w in _WORD.findall(recalled)]
    matcher = SequenceMatcher(None, said, given, autojunk=False)
    kept: list[str] = []
    at = 0  # the next word of the answer not yet kept or cut
    for first, _, size in matcher.get_matching_blocks():
        if size < MIN_COPIED_WORDS:
            continue
        if first > at:
            kept.append(answer[spans[at][0] : spans[first - 1][1]])
        at = first + size
    if at == 0:
        return answer  # nothing copied: the answer as it was, whitespace and all
    if at < len(spans):
        kept.append(answer[spans[at][0] :])
    text = "\n".join(part.strip() for part in kept if part.strip())
    return text if len(_WORD.findall(text)) >= MIN_KEPT_WORDS else ""
