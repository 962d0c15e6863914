"""Retrieval benchmark: search latency, recall vs exact search, ingestion throughput.

Prints figures; it is not a test. Run ``python -m bench.retrieval [--embedder fake|real]
[--tenant-rows N]``. Texts are synthetic sentences over a 5k-word vocabulary (seeded).

- ingestion: memories/s through ``MemoryService.store`` (validate, redact, chunk, WAL
  fsync, embed, dedup, LanceDB upsert) until all are applied, 16 concurrent writers of 50.
- search p50/p99: ``MemoryService.search`` end to end, query embedding included (distinct
  queries, so no query-cache hits), for one user of 10k memories, then for one user of a
  tenant of ``--tenant-rows`` (bulk-loaded straight into the store; 10k per user) and for
  a single user holding all of them (the RAM exact scan's worst case).
- recall: the vector half of the candidates against numpy exact top 10 over the scope.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from memory.model import Memory, Scope, Source, Tier, content_hash, utcnow
from memory.service import MemoryService
from memory.store import ScopeFilter


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    names = ["alice", "project", "meeting", "flight", "doctor", "budget", "garden", "train"]
    return [
        f"{rng.choice(names)} {' '.join(rng.choices(vocab, k=rng.randint(6, 14)))} item{i}."
        for i in range(n)
    ]


def load_embedder(kind: str) -> Any:
    if kind == "fake":
        from tests.fakes import FakeEmbedder

        return FakeEmbedder(384)
    from memory.embedder import load_embedder as load

    return load(cache_dir=Path(tempfile.gettempdir()) / "memshadow-bench-models")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def ingest(service: MemoryService, user: str, texts: list[str]) -> float:
    scope = Scope(tenant="bench", user=user)
    batches = [texts[i : i + 50] for i in range(0, len(texts), 50)]
    started = time.perf_counter()
    queue = list(batches)

    async def writer() -> None:
        while queue:
            await service.store(scope, [{"content": t} for t in queue.pop()])

    await asyncio.gather(*(writer() for _ in range(16)))
    await service._ingest.flush()
    return len(texts) / (time.perf_counter() - started)


async def latency(service: MemoryService, user: str, n: int, seed: int) -> tuple[float, float]:
    scope = Scope(tenant="bench", user=user)
    queries = sentences(n + 5, seed)
    for q in queries[:5]:  # warm-up (scope load, caches)
        await service.search(scope, q, k=10)
    times = []
    for q in queries[5:]:
        started = time.perf_counter()
        await service.search(scope, q, k=10)
        times.append((time.perf_counter() - started) * 1000)
    return pct(times, 50), pct(times, 99)


async def recall_vs_exact(service: MemoryService, user: str, n: int) -> float:
    store: Any = service._store
    exported = [(m, v) async for m, v in store.export("bench", ScopeFilter(user))]
    matrix = np.stack([v for _, v in exported])
    ids = [m.id for m, _ in exported]
    hits = 0
    for q in sentences(n, 99):
        qv = service.embedder.embed_batch([q])[0]
        exact = {ids[i] for i in np.argsort(-(matrix @ qv))[:10]}
        cands = await store.candidates("bench", qv, q, ScopeFilter(user), 10)
        found = {m.id for m, r in zip(cands.memories, cands.vector_rank, strict=True) if r >= 0}
        hits += len(exact & found)
    return hits / (10 * n)


def cached_vectors(service: MemoryService, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts``, kept on disk by content: bulk-loading 100k rows with the real
    embedder takes minutes on 2 cores and is not what is measured."""
    key = hashlib.sha256("\n".join([service.embedder.model_id, *texts]).encode()).hexdigest()[:24]
    path = Path(tempfile.gettempdir()) / "memshadow-bench-vectors" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = service.embedder.embed_batch(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


async def bulk_load(service: MemoryService, users: list[str], per_user: int) -> float:
    """``per_user`` rows for each user, in chunks of 5,000 texts. A single user of 100k rows
    gets the same texts as the tenant's ten users of 10k (one set of embeddings to compute)."""
    store: Any = service._store
    started = time.perf_counter()
    now = utcnow()
    for u, user in enumerate(users):
        for chunk, start in enumerate(range(0, per_user, 5000)):
            seed_user, seed_start = (
                (u, start) if per_user <= 10_000 else divmod(chunk * 5000, 10_000)
            )
            texts = sentences(min(5000, per_user - start), seed=1000 + seed_user * 100 + seed_start)
            vectors = cached_vectors(service, texts)
            memories = [
                Memory(id=uuid.uuid4().hex, tenant="bench", user=user, tier=Tier.LONG_TERM,
                       source=Source.IMPORT, content=t, tokens=len(t.split()),
                       content_hash=content_hash(t), created_at=now, last_used_at=now)
                for t in texts
            ]  # fmt: skip
            await store.add("bench", memories, vectors)
    return time.perf_counter() - started


async def store_settle(service: MemoryService) -> None:
    """Let compaction finish so that it does not share the 2 cores with the timed searches."""
    store: Any = service._store
    await store.optimize("bench", cleanup=False)


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="memshadow-bench-"))
    embedder = load_embedder(args.embedder)
    print(f"embedder: {embedder.model_id} (dim {embedder.dimension}); data dir {data}")
    service = MemoryService(data, embedder)
    await service.start()
    try:
        rate = await ingest(service, "user-10k", sentences(10_000, 1))
        print(f"ingestion (store → searchable), 10k memories: {rate:,.0f} memories/s")
        p50, p99 = await latency(service, "user-10k", 300, 7)
        print(f"search, one user scope of 10k: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(
            "vector recall@10 vs exact, 10k scope: "
            f"{await recall_vs_exact(service, 'user-10k', 50):.3f}"
        )
        per_user = 10_000
        users = [f"tenant-user-{i}" for i in range(args.tenant_rows // per_user)]
        seconds = await bulk_load(service, users, per_user)
        print(f"bulk-loaded {args.tenant_rows:,} more rows in {seconds:.0f} s")
        await store_settle(service)
        p50, p99 = await latency(service, users[-1], 300, 8)
        rows = args.tenant_rows + 10_000
        print(f"search, one 10k user in a tenant of {rows:,}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        if args.big_user:
            await bulk_load(service, ["big-user"], args.tenant_rows)
            p50, p99 = await latency(service, "big-user", 100, 9)
            print(
                f"search, one user holding {args.tenant_rows:,}: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            )
            recall = await recall_vs_exact(service, "big-user", 50)
            print(
                f"vector recall@10 vs exact, {args.tenant_rows:,} scope "
                f"(binary prefilter): {recall:.3f}"
            )
    finally:
        await service.aclose()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", choices=["fake", "real"], default="fake")
    parser.add_argument("--tenant-rows", type=int, default=100_000)
    parser.add_argument("--big-user", action="store_true", help="also one user with all rows")
    asyncio.run(main(parser.parse_args()))
