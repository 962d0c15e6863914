"""Split long content into chunks of at most ``max_tokens`` tokens at sentence boundaries.

Pure: the token counter is passed in. Sentences are packed greedily in order; a sentence
that alone exceeds the limit is split between words (and a single enormous "word", such as a
base64 blob, between characters), so every chunk fits and no text is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["DEFAULT_CHUNK_TOKENS", "chunk_text", "split_sentences"]

DEFAULT_CHUNK_TOKENS = 256  # MiniLM truncates at 256 word pieces; longer chunks lose their tail

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"')\]]*\s+|\n{2,}|\n(?=\s*[-*•\d]+[.)]?\s)")


def split_sentences(text: str) -> list[str]:
    """Sentences (and paragraph or list-item breaks) of ``text``, whitespace-trimmed."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def chunk_text(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """``text`` as one chunk if it fits, else sentence-aligned chunks each within ``max_tokens``."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    text = text.strip()
    if count(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    for sentence in split_sentences(text):
        pieces.extend(_split_oversized(sentence, max_tokens, count, " "))
    return _pack(pieces, max_tokens, count, " ")


def _split_oversized(
    text: str, max_tokens: int, count: Callable[[str], int], sep: str
) -> list[str]:
    if count(text) <= max_tokens:
        return [text]
    words = text.split()
    if len(words) > 1:
        parts = [p for w in words for p in _split_oversized(w, max_tokens, count, "")]
        return _pack(parts, max_tokens, count, " ")
    # One unbroken run longer than the limit: halve it until the halves fit.
    middle = len(text) // 2
    return _split_oversized(text[:middle], max_tokens, count, sep) + _split_oversized(
        text[middle:], max_tokens, count, sep
    )


def _pack(pieces: list[str], max_tokens: int, count: Callable[[str], int], sep: str) -> list[str]:
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{sep}{piece}" if current else piece
        if current and count(candidate) > max_tokens:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks
