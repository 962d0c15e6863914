"""How many tokens memory may take, and which memories fit (pure; tokens counted by caller)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

CountTokens = Callable[[str], int]

# A memory cut shorter than this is more noise than signal: drop it instead.
MIN_TRUNCATED_TOKENS = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def memory_budget(
    *,
    context_window: int,
    prompt_tokens: int,
    completion_reserve: int,
    cap: int,
    fraction: float,
) -> int:
    """At most ``cap``, and ``fraction`` of the room the prompt and the reply leave free.

    Never negative; zero when the request already fills the window, so memory can never be
    what pushes a request over it.
    """
    room = context_window - prompt_tokens - completion_reserve
    if room <= 0:
        return 0
    return max(0, min(cap, int(room * fraction)))


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    content: str
    tokens: int
    score: float
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Packed:
    candidate: Candidate
    content: str
    tokens: int
    truncated: bool


def cut_at_sentence(text: str, limit: int, count_tokens: CountTokens) -> str | None:
    """The longest prefix of whole sentences within ``limit`` tokens, or None."""
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    kept: list[str] = []
    for sentence in sentences:
        attempt = " ".join([*kept, sentence])
        if count_tokens(attempt) > limit:
            break
        kept.append(sentence)
    return " ".join(kept) if kept else None


def pack(
    candidates: Sequence[Candidate],
    budget: int,
    count_tokens: CountTokens,
    *,
    per_item_overhead: int = 0,
) -> list[Packed]:
    """Best-first packing into ``budget`` tokens.

    A candidate that does not fit whole is cut at a sentence boundary when what fits is still
    worth having; otherwise the scan goes on to smaller candidates further down.
    """
    remaining = budget
    packed: list[Packed] = []
    for candidate in candidates:
        cost = candidate.tokens + per_item_overhead
        if cost <= remaining:
            packed.append(Packed(candidate, candidate.content, candidate.tokens, False))
            remaining -= cost
            continue
        room = remaining - per_item_overhead
        if room < MIN_TRUNCATED_TOKENS:
            continue
        cut = cut_at_sentence(candidate.content, room, count_tokens)
        if cut is None:
            continue
        tokens = count_tokens(cut)
        if tokens >= MIN_TRUNCATED_TOKENS:
            packed.append(Packed(candidate, cut, tokens, True))
            remaining -= tokens + per_item_overhead
    return packed
