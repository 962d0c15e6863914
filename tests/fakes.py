"""Small deterministic collaborators for tests where the real thing is not the point."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from memory.embedder import Vectors

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """Hashing-trick bag of words: texts sharing words get similar vectors.

    Deterministic across processes (blake2b, not ``hash()``), fast, and good enough for
    tests that need "related text ranks higher" without loading a model.
    """

    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension
        self.calls = 0

    @property
    def model_id(self) -> str:
        return f"fake-bow-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dimension
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out
