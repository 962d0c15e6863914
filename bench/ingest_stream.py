"""The shared ingestion stream against the local write-ahead log: ack latency, throughput.

Prints figures; it is a benchmark, never a timed test. Everything runs in this process,
apps driven in-process through their HTTP surface (``POST /v1/memories``), each replica
with its own data dir on this disk, replicas sharing one store directory:

- *ack latency*: one memory per request, one request at a time, rounds interleaved
  between three apps: no Redis (acknowledged once fsync-ed to the local write-ahead log),
  and the stream on a ``redis-server`` with AOF ``appendfsync everysec`` and with
  ``appendfsync always`` (one Redis each, on loopback, its AOF on this disk);
- *throughput*: ``--memories`` stored by 16 concurrent clients spread over the replicas,
  until every one is applied (each replica's list waits for what it acknowledged), for one
  replica with its local log, two replicas each with its own local log (N writers per
  table: the behaviour without the stream), and two replicas on the stream (one writer
  per tenant). ``--tenants`` spreads the memories over that many tenants. *Commits* is
  how many table versions ingestion made: fewer, larger commits are what one writer per
  table buys (Lance fragments per commit; DESIGN.md: "write in batches from one writer
  per table").

    .venv/bin/python -m bench.ingest_stream [--stores 400] [--memories 2000] [--tenants 1]
        [--embedder fake|real]

The fake embedder (a hashing bag of words) isolates the pipeline; ``real`` is the bundled
MiniLM on ONNX Runtime, which makes ingestion embedding-bound. The two replicas share this
process's cores and GIL, so "two replicas" measures what the design costs or saves, not
what a second machine adds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import lancedb
from asgi_lifespan import LifespanManager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.shared_state import free_port
from config import Settings
from memory.apply import Write
from memory.embedder import Embedder, load_embedder
from memory.ingest import WriteAheadLog
from memory.lance_rows import table_name
from memory.model import Memory, Source, Tier, utcnow
from memory.stream import encode_writes
from proxy.app import create_app
from proxy.ingest_stream import RedisIngestStream
from proxy.keys import TenantRegistry
from proxy.metrics import Metrics
from proxy.shared_state import RedisState
from tests.fakes import FakeEmbedder


def start_redis(directory: Path, fsync: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    directory.mkdir(parents=True)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", fsync, "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        done = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
        if done.stdout.strip() == b"PONG":
            return server, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


@asynccontextmanager
async def replicas(
    root: Path, names: list[str], redis_url: str | None, embedder: Embedder, tenants: int
) -> AsyncIterator[list[dict[str, httpx.AsyncClient]]]:
    """Apps on one store; per replica, one client per tenant (its key)."""
    registry = TenantRegistry(str(root / "store" / "registry"))
    keys = [registry.create_key(f"t{n}")[0] for n in range(tenants)]
    async with AsyncExitStack() as stack:
        out = []
        for name in names:
            settings = Settings(
                upstream_base_url="http://upstream.bench/v1", data_dir=root / name,
                store_uri=str(root / "store"), redis_url=redis_url,
            )  # fmt: skip
            app = create_app(settings, embedder=embedder)
            manager = await stack.enter_async_context(LifespanManager(app))
            transport = httpx.ASGITransport(app=manager.app)
            out.append({
                f"t{n}": await stack.enter_async_context(httpx.AsyncClient(
                    transport=transport, base_url="http://m",
                    headers={"authorization": f"Bearer {key}"}))
                for n, key in enumerate(keys)
            })  # fmt: skip
        yield out


async def store(client: httpx.AsyncClient, text: str) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/memories", json={"user": "ann", "content": text})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 201, response.text
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ack_latency(root: Path, urls: dict[str, str | None], n: int) -> None:
    async with AsyncExitStack() as stack:
        clients = {
            name: (await stack.enter_async_context(
                replicas(root / name, ["r"], url, FakeEmbedder(384), 1)))[0]["t0"]
            for name, url in urls.items()
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(n + 20):
            for name, client in clients.items():
                elapsed = await store(client, f"Ann noted fact {i}: tea, bikes and Lisbon.")
                if i >= 20:  # after a warm-up
                    times[name].append(elapsed)
    print(f"\nstore acknowledgement, {n} sequential single-memory stores each (HTTP in-process)\n")
    print("| acknowledged in | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, series in times.items():
        print(f"| {name} | {statistics.median(series):.2f} | {pct(series, 0.99):.2f} |")


async def durable_step(root: Path, urls: dict[str, str], n: int) -> None:
    """The step that makes a store durable, alone: the WAL's append + fsync (on a worker
    thread, as the ingestor runs it) against the stream's XADD + SADD."""
    wal = WriteAheadLog(root / "wal")
    wal.open()
    memory = Memory(
        id="m", tenant="t", user="ann", tier=Tier.LONG_TERM, source=Source.API,
        content="Ann noted a fact: tea, bikes and Lisbon.", tokens=9, content_hash="h",
        created_at=utcnow(), last_used_at=utcnow(),
    )  # fmt: skip
    payload = encode_writes("t", [Write("t", memory)])
    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "local WAL (fsync)": lambda: asyncio.to_thread(wal.append, [("t", memory, None, False)])
    }
    states = []
    for fsync, url in urls.items():
        # Its own namespace: no replica's writer must find (and apply) these entries.
        state = RedisState(url, Metrics(), namespace="bench-durable:")
        await state.start()
        states.append(state)
        steps[f"stream, AOF {fsync}"] = functools.partial(
            RedisIngestStream(state).append, "t", payload
        )
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(n + 20):
        for name, step in steps.items():
            started = time.perf_counter()
            await step()
            if i >= 20:
                times[name].append((time.perf_counter() - started) * 1000)
    for state in states:
        await state.aclose()
    wal.close()
    print(f"\nthe durable step alone, {n} each, interleaved\n")
    print("| durable in | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, series in times.items():
        print(f"| {name} | {statistics.median(series):.3f} | {pct(series, 0.99):.3f} |")


async def throughput(
    root: Path, name: str, names: list[str], url: str | None, args: argparse.Namespace,
    embedder: Embedder,
) -> None:  # fmt: skip
    async with replicas(root, names, url, embedder, args.tenants) as fleet:
        jobs: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.memories):
            jobs.put_nowait(i)

        async def client_loop(worker: int) -> None:
            while not jobs.empty():
                i = jobs.get_nowait()
                replica = fleet[(worker + i) % len(fleet)]
                await store(replica[f"t{i % args.tenants}"], f"Ann's fact {i}: {WORDS[i % 97]}.")

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(w) for w in range(16)))
        acked = time.perf_counter() - started
        for replica in fleet:  # each list waits for what that replica acknowledged
            for client in replica.values():
                listed = await client.get("/v1/memories", params={"user": "ann", "limit": 1})
                assert listed.status_code == 200, listed.text
        applied = time.perf_counter() - started
    db = lancedb.connect(root / "store" / "memory" / "lancedb")
    commits = sum(db.open_table(table_name(f"t{n}")).version - 1 for n in range(args.tenants))
    print(f"| {name} | {args.memories / acked:.0f} | {args.memories / applied:.0f} | {commits} |")


WORDS = [f"topic {w}" for w in range(97)]


async def run(args: argparse.Namespace, root: Path, urls: dict[str, str]) -> None:
    await durable_step(root / "durable", urls, args.stores * 2)
    await ack_latency(root / "ack", {
        "local WAL (fsync)": None,
        "stream, AOF everysec": urls["everysec"],
        "stream, AOF always": urls["always"],
    }, args.stores)  # fmt: skip
    embedder: Embedder = (
        load_embedder(None, root / "models") if args.embedder == "real" else FakeEmbedder(384)
    )
    print(f"\nthroughput, {args.memories} memories over {args.tenants} tenant(s),"
          f" 16 concurrent clients, embedder {args.embedder}\n")  # fmt: skip
    print("| replicas | acknowledged / s | applied / s | table commits |")
    print("|---|---|---|---|")
    await throughput(root / "one", "one, local WAL", ["a"], None, args, embedder)
    await throughput(root / "two-wal", "two, local WALs", ["a", "b"], None, args, embedder)
    await throughput(root / "two-stream", "two, stream (AOF everysec)", ["a", "b"],
                     urls["everysec"], args, embedder)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stores", type=int, default=400, help="ack latency: stores per app")
    parser.add_argument("--memories", type=int, default=2000, help="throughput: memories")
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--embedder", choices=["fake", "real"], default="fake")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        servers: list[subprocess.Popen[bytes]] = []
        urls: dict[str, str] = {}
        try:
            for fsync in ("everysec", "always"):
                server, urls[fsync] = start_redis(root / f"redis-{fsync}", fsync)
                servers.append(server)
            asyncio.run(run(args, root, urls))
        finally:
            for server in servers:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
