"""Which way of running the embedder on CPU is fastest while staying faithful?

Compares backends (torch vs ONNX Runtime), int8 dynamic quantisation and max sequence
length on (a) one short query's latency, p50/p99, (b) batch throughput over a varied
corpus, and (c) faithfulness: mean (and minimum) cosine between each variant's vectors
and the reference, torch fp32 at the model's own max_seq_length (256 for MiniLM).

The corpus is built offline: hand-written memory-like facts and questions in several
languages, plus paragraphs of the standard library's docstrings (real prose of every
length, ~15% longer than 128 tokens so truncation shows up).

Run: ``HF_HUB_OFFLINE=1 python bench/embedder.py [--threads 2] [--cache-dir DIR]``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memory.embedder import (
    CachedEmbedder,
    Embedder,
    ModelSource,
    OnnxEmbedder,
    TorchEmbedder,
    resolve_model,
)

QUERIES = [
    "what is my sister's name?",
    "which database do we use in production?",
    "remind me of my dietary restrictions",
    "where did I go on holiday last year",
    "how do I deploy the staging server?",
    "what's the wifi password at the office",
    "favourite programming language",
    "when is the quarterly review",
]

FACTS = [
    "My sister Alice lives in Lyon and works as a nurse.",
    "We use PostgreSQL 16 in production and SQLite for local tests.",
    "I am vegetarian and allergic to peanuts.",
    "Last summer I spent two weeks hiking in the Dolomites.",
    "Staging is deployed with `make deploy ENV=staging` from the release branch.",
    "The office wifi password was rotated on Monday; ask IT for the new one.",
    "I mostly write Rust at work but prefer Python for scripting.",
    "The quarterly review is on the third Thursday of March.",
    "Our cat is called Miso and she hates the vacuum cleaner.",
    "The API rate limit is 600 requests per minute per key.",
    "I prefer answers in British English, with metric units.",
    "Bob from finance approves all expenses above 500 euros.",
    "The on-call rotation changes every Monday at 09:00 UTC.",
    "I'm training for a half marathon in October.",
    "Our main competitor launched a cheaper plan last week.",
    "The kids' school starts at 8:15 and ends at 15:30.",
    "Never schedule meetings on Friday afternoons.",
    "The build broke because the lockfile was out of date.",
    "J'habite à Montréal depuis 2019 et je travaille dans une startup.",
    "Mi color favorito es el azul y me encanta la paella.",
    "Ich trinke morgens nur grünen Tee, keinen Kaffee.",
    "東京のオフィスは渋谷にあります。",
    "def add(a, b):\n    return a + b",
    "SELECT id, email FROM users WHERE created_at > now() - interval '7 days';",
    "ok",
    "thanks!",
    "🙂 sounds good, see you at 3pm",
    "Error: connection refused (ECONNREFUSED) 127.0.0.1:6379",
    "The quick brown fox jumps over the lazy dog.",
    "Please summarise the meeting notes from yesterday in three bullet points.",
]

STDLIB_MODULES = [
    "json", "pathlib", "collections", "argparse", "asyncio", "http.client", "email.message",
    "logging", "unittest", "textwrap", "functools", "itertools", "re", "datetime", "decimal",
    "subprocess", "threading", "csv", "sqlite3", "urllib.parse", "shutil", "tempfile",
    "dataclasses", "enum", "typing", "zipfile", "tarfile", "socket", "ssl", "heapq",
]  # fmt: skip


def build_corpus(limit: int = 320) -> list[str]:
    """Deterministic varied texts: facts, queries, then stdlib docstring paragraphs."""
    texts = FACTS + QUERIES
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        for _, member in sorted(inspect.getmembers(module), key=lambda kv: kv[0]):
            doc = inspect.getdoc(member) if callable(member) else None
            if not doc:
                continue
            whole = " ".join(doc.split())
            if len(whole) > 900:  # keep a whole long docstring too, to exercise truncation
                texts.append(whole[:4000])
            for paragraph in re.split(r"\n\s*\n", doc):
                flat = " ".join(paragraph.split())
                if 20 <= len(flat) <= 2000 and flat not in texts:
                    texts.append(flat)
    # Spread the selection over all modules instead of taking the first few.
    head, rest = texts[: len(FACTS) + len(QUERIES)], texts[len(FACTS) + len(QUERIES) :]
    step = max(1, len(rest) // (limit - len(head)))
    return head + rest[::step][: limit - len(head)]


def time_queries(embedder: Embedder, rounds: int) -> list[float]:
    """Milliseconds per single short query, ``rounds`` passes over :data:`QUERIES`."""
    samples = []
    for _ in range(rounds):
        for query in QUERIES:
            start = time.perf_counter()
            embedder.embed_batch([query])
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def time_corpus(embedder: Embedder, corpus: list[str]) -> float:
    start = time.perf_counter()
    embedder.embed_batch(corpus)
    return time.perf_counter() - start


def timed(build: Callable[[], Embedder]) -> tuple[Embedder, float]:
    start = time.perf_counter()
    embedder = build()
    return embedder, time.perf_counter() - start


def variants(
    source: ModelSource, cache_dir: Path, threads: int
) -> list[tuple[str, Callable[[], Embedder]]]:
    def torch_(seq: int, q: bool) -> Callable[[], Embedder]:
        return lambda: TorchEmbedder(source, max_seq_length=seq, threads=threads, quantize=q)

    def onnx_(seq: int, q: bool) -> Callable[[], Embedder]:
        return lambda: OnnxEmbedder(
            source, cache_dir, max_seq_length=seq, threads=threads, quantize=q
        )

    return [
        ("torch fp32 seq256 (reference)", torch_(256, False)),
        ("torch fp32 seq128", torch_(128, False)),
        ("torch int8 seq256", torch_(256, True)),
        ("torch int8 seq128", torch_(128, True)),
        ("onnx fp32 seq256", onnx_(256, False)),
        ("onnx fp32 seq128", onnx_(128, False)),
        ("onnx int8 seq256", onnx_(256, True)),
        ("onnx int8 seq128", onnx_(128, True)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache")
    parser.add_argument("--model", default=None, help="local model dir; default: bundled")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = parser.parse_args()
    source = resolve_model(args.model)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-embedder-"))
    corpus = build_corpus()
    long_rows = find_long_rows(source, corpus)
    print(
        f"model {source.model_id}, {len(corpus)} texts ({len(long_rows)} over 128 tokens), "
        f"{args.threads} threads, ONNX cache {cache_dir}"
    )
    loaded = {name: timed(build) for name, build in variants(source, cache_dir, args.threads)}
    reference = next(iter(loaded.values()))[0].embed_batch(corpus)
    queries: dict[str, list[float]] = {name: [] for name in loaded}
    batches: dict[str, list[float]] = {name: [] for name in loaded}
    shorts: dict[str, list[float]] = {name: [] for name in loaded}
    short_corpus = (FACTS + QUERIES) * 8
    # Interleaved rounds: on a shared 2-core machine, background load then hits every
    # variant alike instead of whichever happened to run during it.
    for _ in range(args.rounds):
        for name, (embedder, _) in loaded.items():
            time_queries(embedder, 1)  # warm-up after the other variants ran
            queries[name] += time_queries(embedder, 10)
            batches[name].append(time_corpus(embedder, corpus))
            shorts[name].append(time_corpus(embedder, short_corpus) / len(short_corpus))
    print_table(loaded, queries, batches, shorts, corpus, reference, long_rows)
    report_cache(next(iter(loaded.values()))[0])


def print_table(
    loaded: dict[str, tuple[Embedder, float]],
    queries: dict[str, list[float]],
    batches: dict[str, list[float]],
    shorts: dict[str, list[float]],
    corpus: list[str],
    reference: np.ndarray,
    long_rows: list[int],
) -> None:
    header = (
        f"| {'variant':30} | {'load s':>6} | {'query p50 ms':>12} | {'query p99 ms':>12} "
        f"| {'batch sent/s':>12} | {'short sent/s':>12} "
        f"| {'cos mean':>8} | {'cos min':>7} | {'cos >128 tok':>12} |"
    )
    print(
        "\n" + header + "\n|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|"
    )
    for name, (embedder, load_s) in loaded.items():
        cos = np.einsum("ij,ij->i", embedder.embed_batch(corpus), reference)
        cos_long = cos[long_rows].mean()
        samples = sorted(queries[name])
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        rate = len(corpus) / min(batches[name])
        print(
            f"| {name:30} | {load_s:6.2f} | {statistics.median(samples):12.2f} | {p99:12.2f} "
            f"| {rate:12.0f} | {1 / min(shorts[name]):12.0f} "
            f"| {cos.mean():8.4f} | {cos.min():7.4f} | {cos_long:12.4f} |"
        )


def find_long_rows(source: ModelSource, corpus: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return [i for i, e in enumerate(tokenizer.encode_batch(corpus)) if len(e.ids) > 128]


def report_cache(embedder: Embedder) -> None:
    cached = CachedEmbedder(embedder)
    cached.embed(QUERIES[0])
    start = time.perf_counter()
    for _ in range(10_000):
        cached.embed(QUERIES[0])
    hit_us = (time.perf_counter() - start) / 10_000 * 1e6
    start = time.perf_counter()
    for _ in range(10_000):
        cached.embed_batch([QUERIES[0]])
    batch_us = (time.perf_counter() - start) / 10_000 * 1e6
    print(f"\nCachedEmbedder hit: embed() {hit_us:.1f} µs, embed_batch([q]) {batch_us:.1f} µs")


if __name__ == "__main__":
    main()
