"""Token counting with tiktoken's ``cl100k_base``, loaded offline.

tiktoken downloads its BPE files on first use, which this product must never do at run
time. LiteLLM (a dependency) ships ``cl100k_base`` inside its package, named as tiktoken's own
cache names it (the SHA-1 of the download URL), so we load that file directly and verify it
against the hash tiktoken itself expects. Nothing here touches the environment or imports
LiteLLM (whose import is slow); we only locate its package directory.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

__all__ = ["TokenCounter", "TokenizerUnavailable", "load_cl100k"]

# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14), whose constructor insists on
# fetching the file by URL.
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # sha1(_CL100K_URL)
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class TokenizerUnavailable(RuntimeError):
    """The offline copy of the tokenizer could not be found."""


def _bundled_bpe_path() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        raise TokenizerUnavailable("litellm is not installed; it ships the offline cl100k_base")
    path = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers" / _CL100K_CACHE_NAME
    if not path.is_file():
        raise TokenizerUnavailable(f"cl100k_base not found at {path}")
    return path


def load_cl100k() -> tiktoken.Encoding:
    """The ``cl100k_base`` encoding, from the bundled file, hash-checked, no network."""
    ranks = load_tiktoken_bpe(str(_bundled_bpe_path()), expected_hash=_CL100K_SHA256)
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )


class TokenCounter:
    """Counts and slices text in tokens; build one and pass it (or its ``count``) around."""

    def __init__(self, encoding: tiktoken.Encoding | None = None) -> None:
        self._encoding = encoding or load_cl100k()

    def count(self, text: str) -> int:
        # disallowed_special=() so user text containing "<|endoftext|>" is counted, not refused.
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self._encoding.encode_batch(texts, disallowed_special=())]

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self._encoding.encode(text, disallowed_special=())
        return text if len(ids) <= max_tokens else self._encoding.decode(ids[:max_tokens])

    @property
    def counter(self) -> Callable[[str], int]:
        return self.count
