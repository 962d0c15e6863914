"""The exact cosine scan of a scope, alone and shared with the recall pool's idle thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np

from memory.index import ScopeIndex
from memory.model import Memory, Source, Tier, content_hash

DIM = 32
ROWS = 5_000  # five scan blocks and a partial one


def _memory(n: int, at: datetime) -> Memory:
    return Memory(
        id=f"m{n}", tenant="t", user="u", session=f"s{n}", tier=Tier.EPISODIC,
        source=Source.API, content=f"note {n}", tokens=3, content_hash=content_hash(str(n)),
        created_at=at, last_used_at=at,
    )  # fmt: skip


def _scope() -> tuple[ScopeIndex, np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    at = datetime(2024, 1, 1, tzinfo=UTC)
    memories = [_memory(n, at + timedelta(days=n)) for n in range(ROWS)]
    index = ScopeIndex(DIM)
    index.upsert(memories, vectors)
    return index, vectors


def _top_ids(index: ScopeIndex, query: np.ndarray, helper: ThreadPoolExecutor | None) -> list[str]:
    found = index.search(query, "", session=None, tiers=None, limit=20, helper=helper)
    ranked = sorted(zip(found.vector_rank.tolist(), found.memories, strict=True))
    return [m.id for rank, m in ranked if rank >= 0]


def test_a_helped_scan_finds_the_exact_nearest_rows() -> None:
    index, vectors = _scope()
    queries = np.random.default_rng(8).standard_normal((10, DIM)).astype(np.float32)
    with ThreadPoolExecutor(1) as helper:
        for query in queries:
            query /= np.linalg.norm(query)
            truth = [f"m{i}" for i in np.argsort(-(vectors @ query), kind="stable")[:20]]
            assert _top_ids(index, query, helper) == _top_ids(index, query, None) == truth


def test_a_busy_helper_is_not_waited_for() -> None:
    index, vectors = _scope()
    query = vectors[42]
    release = threading.Event()
    with ThreadPoolExecutor(1) as helper:
        helper.submit(release.wait, 30)  # the pool's only thread is taken for the whole scan
        started = time.perf_counter()
        top = _top_ids(index, query, helper)
        elapsed = time.perf_counter() - started
        release.set()
    assert top[0] == "m42"
    assert elapsed < 5  # the caller scanned every block itself instead of waiting 30 s
