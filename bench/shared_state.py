"""What Redis (the shared state of replicas) costs a chat request, against the in-process default.

Prints figures; it is a benchmark, never a timed test. Two apps run in this process, one
with ``MEMSHADOW_REDIS_URL`` pointing at a ``redis-server`` started on loopback and one
without, on the same mock upstream (an ``httpx.MockTransport`` that notes when each request
reaches it) and the same seeded memories; rounds alternate between them. Per request:

- *to upstream*: from the client's send to the upstream seeing the request (all the proxy
  does before forwarding: auth, recall, injection);
- *total*: the whole request, as the client sees it;
- Redis commands per request (``INFO commandstats``; a pipeline's MULTI and EXEC count),
  and how many of them ran before the upstream saw the request.

    .venv/bin/python bench/shared_state.py [--requests 400] [--memories 200]

The embedder is a hashing bag of words (tests/fakes.py): what is measured here is the
shared state, not recall, which costs the same with or without Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from config import Settings
from proxy.app import create_app
from proxy.keys import TenantRegistry
from tests.fakes import FakeEmbedder, completion


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_commands(port: int) -> int:
    info = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "commandstats"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total = 0
    for line in info.splitlines():
        if line.startswith("cmdstat_") and not line.startswith(("cmdstat_info", "cmdstat_ping")):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


class Upstream:
    """The mock upstream: answers at once and notes when each request reached it (and how
    many Redis commands had run by then)."""

    def __init__(self, redis_port: int) -> None:
        self.arrived = 0.0
        self.commands = 0
        self.counting = False  # counting runs redis-cli: never while timing
        self._port = redis_port

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.arrived = time.perf_counter()
        if self.counting:
            self.commands = redis_commands(self._port)
        return httpx.Response(
            200, json={**completion("m", "Green tea."), "id": f"c-{time.time_ns()}"}
        )


async def run(args: argparse.Namespace, root: Path, port: int) -> None:
    registry = TenantRegistry(str(root / "registry-seed"))
    key, _ = registry.create_key("acme")
    upstream = Upstream(port)
    apps: dict[str, Any] = {}
    for name, redis_url in (("in-process", None), ("redis", f"redis://127.0.0.1:{port}/0")):
        shutil.copytree(root / "registry-seed", root / name / "registry")
        settings = Settings(
            upstream_base_url="http://upstream.bench/v1",
            upstream_api_key="sk",
            data_dir=root / name,
            redis_url=redis_url,
            memory={"policy": {"recall_deadline_ms": 1000}},
        )
        client = httpx.AsyncClient(transport=httpx.MockTransport(upstream.handle))
        apps[name] = create_app(settings, http_client=client, embedder=FakeEmbedder(384))
    headers = {"authorization": f"Bearer {key}", "x-memory-user": "ann", "x-memory-mode": "read"}
    async with LifespanManager(apps["in-process"]) as one, LifespanManager(apps["redis"]) as two:
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://m", headers=headers
            )
            for name, manager in (("in-process", one), ("redis", two))
        }  # fmt: skip
        for client in clients.values():
            items = [
                {"content": f"Ann noted fact number {i}: tea, bikes, Lisbon."}
                for i in range(args.memories)
            ]
            await client.post("/v1/memories", json={"user": "ann", "items": items})
            await client.post("/v1/memories/search", json={"query": "tea", "user": "ann"})
        body = {"model": "m", "messages": [{"role": "user", "content": "What tea does Ann drink?"}]}
        figures: dict[str, dict[str, list[float]]] = {n: {"up": [], "total": []} for n in clients}
        commands = before_forwarding = 0
        for round_ in range(args.requests + 20):
            for name, client in clients.items():
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                finished = time.perf_counter()
                assert response.status_code == 200, response.text
                await asyncio.sleep(0.005)  # let the after-response writes land
                if round_ >= 20:  # after a warm-up
                    figures[name]["up"].append((upstream.arrived - started) * 1000)
                    figures[name]["total"].append((finished - started) * 1000)
        upstream.counting = True
        for _ in range(args.counted):
            before = redis_commands(port)
            await clients["redis"].post("/v1/chat/completions", json=body)
            await asyncio.sleep(0.05)
            commands += redis_commands(port) - before
            before_forwarding += upstream.commands - before
        for client in clients.values():
            await client.aclose()
    print(f"{args.requests} chat requests each, {args.memories} memories, rounds interleaved\n")
    print(
        "| shared state | to upstream p50 / p99 ms | total p50 / p99 ms"
        " | Redis commands / request (before forwarding) |"
    )
    print("|---|---|---|---|")
    for name, series in figures.items():
        up, total = sorted(series["up"]), sorted(series["total"])

        def pct(values: list[float], q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        per_request = commands / args.counted if name == "redis" else 0.0
        early = before_forwarding / args.counted if name == "redis" else 0.0
        print(
            f"| {name} | {statistics.median(up):.2f} / {pct(up, 0.99):.2f} | "
            f"{statistics.median(total):.2f} / {pct(total, 0.99):.2f} | "
            f"{per_request:.1f} ({early:.1f}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--memories", type=int, default=200)
    parser.add_argument("--counted", type=int, default=50, help="requests whose commands count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root, port = Path(directory), free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            asyncio.run(run(args, root, port))
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
