"""Proxy overhead: a mock upstream reached directly, through MemShadow and through LiteLLM's proxy.

Prints figures; it is a benchmark, never a timed test. Every server runs in its own process
(the mock, ``memshadow serve``, ``litellm --config``) and this process is the load generator,
so no two of them share a GIL. Rounds are interleaved (direct → memshadow → litellm → direct …)
so that the noise of a shared machine lands on every target alike, and added latency is computed
per round (target - direct in the same round) before it is aggregated.

    .venv/bin/python bench/overhead.py               # full run, a few minutes on 2 cores
    .venv/bin/python bench/overhead.py --quick       # smoke run
    .venv/bin/python bench/overhead.py --memory off,on --json /tmp/overhead.json
    .venv/bin/python bench/overhead.py --targets direct,memshadow --profile /tmp/ms.txt
    .venv/bin/python bench/overhead.py --memory off,on --memories 10000,100000

With ``--memories``, each memory-on target has a user of its own seeded beforehand with that
many synthetic memories (the import path, with precomputed random unit vectors), and every
target is sent questions from one pool of distinct synthetic user questions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import (
    MAX_WINDOW_SECONDS,
    MODEL,
    QUESTION_POOL,
    SEED,
    BodyPool,
    LoadClient,
    Target,
    check_target,
    facts,
    load_client,
    sequential,
    synthetic_memory,
    synthetic_questions,
    throughput,
)
from _report import Results, print_profile, print_report
from mock_upstream import run_loop

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Options:
    requests: int
    rounds: int
    concurrency: list[int]
    window_s: float
    memory: list[str]
    targets: list[str]
    chunk_delay_ms: float
    json_path: Path | None
    profile_path: Path | None
    profile_s: float
    profile_target: str | None
    profile_concurrency: int | None
    client: str
    memories: list[int]


# ---------------------------------------------------------------- processes


class Fleet:
    """The subprocesses this benchmark started; all of them are stopped on close."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the child
        # A session of its own, so stopping it reaches any child it spawns and Ctrl-C in the
        # terminal reaches only us (we then stop it in order).
        proc = subprocess.Popen(
            list(argv), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._procs[name] = proc
        return proc

    def pid_of(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        for proc in self._procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 8.0
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5.0)
        self._procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    # The group id is the child's pid: start_new_session=True.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without settings that would change what the servers do."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MEMSHADOW_", "LITELLM_", "OPENAI_"))
        and k not in {"DATABASE_URL", "DIRECT_URL", "REDIS_URL", "HTTP_PROXY", "HTTPS_PROXY"}
    }
    env.update(extra, HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost")
    return env


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, timeout_s: float, headers: dict[str, str] | None = None
) -> None:
    """Poll ``url`` until it answers 200; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with code {proc.returncode} before it was ready")
            try:
                if client.get(url, headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


def start_mock(fleet: Fleet, chunk_delay_ms: float) -> str:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("mock_upstream.py"))]
    argv += ["--port", str(port), "--chunk-delay-ms", str(chunk_delay_ms)]
    proc = fleet.start("mock", argv, clean_env())
    wait_ready(proc, f"http://127.0.0.1:{port}/health", 15.0)
    return f"http://127.0.0.1:{port}/v1"


def start_memshadow(fleet: Fleet, mock_url: str) -> tuple[str, str, str]:
    """Start ``memshadow serve`` through its public contract; return (base URL, tenant key,
    admin key)."""
    exe = VENV_BIN / "memshadow"
    if not exe.exists():
        raise RuntimeError(f"{exe} not found (pip install -e {REPO})")
    data_dir = fleet.workdir / "memshadow-data"
    env = clean_env(
        MEMSHADOW_UPSTREAM_BASE_URL=mock_url,
        MEMSHADOW_UPSTREAM_API_KEY="sk-mock",
        MEMSHADOW_DATA_DIR=str(data_dir),
        MEMSHADOW_ADMIN_KEY=(admin_key := secrets.token_urlsafe(24)),
    )
    created = subprocess.run(
        [str(exe), "keys", "create", "--tenant", "bench"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    lines = created.stdout.decode().strip().splitlines()
    if created.returncode != 0 or not lines:
        raise RuntimeError(f"keys create failed: {created.stderr.decode()[-500:]}")
    port = free_port()
    argv = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = fleet.start("memshadow", argv, env)
    wait_ready(proc, f"http://127.0.0.1:{port}/health", 120.0)
    return f"http://127.0.0.1:{port}/v1", lines[-1].strip(), admin_key


def start_floor(fleet: Fleet, mock_url: str) -> str:
    """Start the floor proxy (``floor_proxy.py``) under uvicorn as MemShadow runs; its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.floor_proxy:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    env = clean_env(UPSTREAM=mock_url, PYTHONPATH=str(REPO))
    proc = fleet.start("floor", argv, env)
    wait_ready(proc, f"http://127.0.0.1:{port}/health", 60.0)
    return f"http://127.0.0.1:{port}/v1"


def litellm_config(mock_url: str, master_key: str) -> str:
    # JSON is YAML: no need for a YAML writer. No database_url: no Prisma, no spend logs.
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": mock_url,
                        "api_key": "sk-mock",
                    },
                }
            ],
            "general_settings": {"master_key": master_key},
            "litellm_settings": {"set_verbose": False},
        },
        indent=2,
    )


def start_litellm(fleet: Fleet, mock_url: str) -> tuple[str, str]:
    """Start LiteLLM's own proxy (uvicorn, one worker); return (base URL, master key)."""
    exe = VENV_BIN / "litellm"
    if not exe.exists():
        raise RuntimeError(f"{exe} not found (pip install 'litellm[proxy]')")
    master_key = "sk-" + secrets.token_hex(16)
    config = fleet.workdir / "litellm.yaml"
    config.write_text(litellm_config(mock_url, master_key))
    # The local cost map avoids a network fetch (and its retries) at start; LITELLM_LOG=ERROR
    # is its quiet default level made explicit. Telemetry is a no-op flag in this version.
    env = clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    port = free_port()
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = fleet.start("litellm", argv, env)
    wait_ready(proc, f"http://127.0.0.1:{port}/health/liveliness", 180.0)
    return f"http://127.0.0.1:{port}/v1", master_key


def start_targets(fleet: Fleet, opts: Options, results: Results) -> list[Target]:
    """Start every requested server; a target that cannot start is skipped, loudly."""
    mock_url = start_mock(fleet, opts.chunk_delay_ms)
    targets = [Target("direct", mock_url, {"authorization": "Bearer sk-mock"})]

    def memshadow() -> list[Target]:
        base_url, key, admin_key = start_memshadow(fleet, mock_url)
        made = memshadow_targets(base_url, key, opts.memory, opts.memories, admin_key)
        if opts.memories and any(t.memory for t in made):
            results.seeding = seed_memories(base_url, key, opts.memories)
        results.memory_sizes.update({t.name: t.memories for t in made if t.memories})
        return made

    starters: dict[str, Callable[[], list[Target]]] = {
        "floor": lambda: [Target("floor", start_floor(fleet, mock_url), {})],
        "memshadow": memshadow,
        "litellm": lambda: [litellm_target(*start_litellm(fleet, mock_url))],
    }
    for name in ("floor", "memshadow", "litellm"):
        if name not in opts.targets:
            continue
        print(f"starting {name} …", flush=True)
        try:
            targets += starters[name]()
        except (RuntimeError, OSError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
            print(f"SKIPPING {name}: {exc}\n{fleet.log_tail(name)}", file=sys.stderr, flush=True)
    return targets


def size_label(n: int) -> str:
    """10000 -> "10k"; sizes that are not whole thousands stay as they are."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def memory_user(n: int | None) -> str:
    return "bench-user" if n is None else f"bench-{size_label(n)}"


def memshadow_targets(
    base_url: str, key: str, modes: list[str], sizes: Sequence[int] = (),
    admin_key: str | None = None,
) -> list[Target]:  # fmt: skip
    """One server, one target per memory mode (the mode is only a request header) and, for
    modes that use memory, per seeded size (each size is a user of its own)."""
    out: list[Target] = []
    for mode in modes:
        headers = {"authorization": f"Bearer {key}", "x-memory-mode": mode}
        if mode == "off":
            out.append(Target("memshadow[off]", base_url, headers, admin_key=admin_key))
            continue
        per_size: list[int | None] = [*sizes] if sizes else [None]
        for n in per_size:
            name = f"memshadow[{mode}]" if n is None else f"memshadow[{mode},{size_label(n)}]"
            user_headers = {**headers, "x-memory-user": memory_user(n)}
            out.append(
                Target(name, base_url, user_headers, memory=True, memories=n, admin_key=admin_key)
            )
    return out


# ---------------------------------------------------------------- seeding


IMPORT_CHUNK_BYTES = 6 * 1024 * 1024  # under the server's 8 MiB default body limit
SEED_BLOCK = 2000
IMPORTS_IN_FLIGHT = 2


def server_embedder(
    client: httpx.Client, base_url: str, headers: dict[str, str]
) -> tuple[str, int]:
    """The server's embedding model id and dimension, read off one stored memory's export."""
    probe = {**headers, "x-memory-user": "bench-probe"}
    response = client.post(
        f"{base_url}/memories", json={"content": "Benchmark probe."}, headers=probe
    )
    response.raise_for_status()
    exported = client.get(
        f"{base_url}/memories/export", params={"include_vectors": "true"}, headers=probe
    )
    exported.raise_for_status()
    first = orjson.loads(exported.content.splitlines()[0])
    client.delete(f"{base_url}/memories", params={"user": "bench-probe"}, headers=probe)
    return str(first["embedding_model"]), len(first["vector"])


def import_lines(user: str, n: int, model: str, dim: int, seed: int) -> Iterator[bytes]:
    """JSONL export records for ``n`` synthetic memories with random unit vectors.

    Content is drawn from the load's vocabulary so that BM25 has realistic postings; vectors
    are random because recall latency depends on the scope's size, not on what the vectors
    mean. Token counts are the real cl100k counts (they drive budget packing).
    """
    from memory.tokens import TokenCounter  # the bench process needs it only when seeding

    count = TokenCounter().count_many
    rng = random.Random(seed)
    vec_rng = np.random.default_rng(seed)
    now = time.time()
    for start in range(0, n, SEED_BLOCK):
        size = min(SEED_BLOCK, n - start)
        contents = [synthetic_memory(rng) for _ in range(size)]
        tokens = count(contents)
        vectors = vec_rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.round(vectors, 4)  # 2.9 kB a vector in JSON instead of 4.7
        for i in range(size):
            created = now - rng.uniform(3600.0, 2 * 365 * 86400.0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(created))
            yield orjson.dumps(
                {
                    "id": f"bench-{user}-{start + i}",
                    "user": user,
                    "tier": "long_term" if rng.random() < 0.2 else "episodic",
                    "source": "import",
                    "content": contents[i],
                    "tokens": tokens[i],
                    "content_hash": hashlib.sha256(contents[i].encode()).hexdigest(),
                    "created_at": stamp,
                    "last_used_at": stamp,
                    "metadata": {},
                    "vector": vectors[i],
                    "embedding_model": model,
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )


def chunked(lines: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """JSONL bodies of at most ``limit`` bytes."""
    body: list[bytes] = []
    size = 0
    for line in lines:
        if body and size + len(line) + 1 > limit:
            yield b"\n".join(body)
            body, size = [], 0
        body.append(line)
        size += len(line) + 1
    if body:
        yield b"\n".join(body)


def seed_memories(base_url: str, key: str, sizes: Sequence[int]) -> dict[int, float]:
    """Seed one user per size; return the seconds each took (import done = searchable)."""
    headers = {"authorization": f"Bearer {key}"}
    timings: dict[int, float] = {}
    with httpx.Client(timeout=900.0, trust_env=False) as client:
        model, dim = server_embedder(client, base_url, headers)
        print(f"server embedder: {model}, {dim} dimensions", flush=True)
        for n in sizes:
            user = memory_user(n)
            started = time.perf_counter()
            # A few facts through the normal store path (real embeddings): questions about
            # them are answered, so the injection path (pack, format, place) is exercised.
            stored = client.post(
                f"{base_url}/memories",
                json={"user": user, "items": [{"content": f} for f in facts()]},
                headers=headers,
            )
            stored.raise_for_status()
            imported = 0

            def post(body: bytes) -> int:
                response = client.post(
                    f"{base_url}/memories/import",
                    content=body,
                    headers={**headers, "content-type": "application/x-ndjson"},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"import: {response.status_code} {response.text[:300]}")
                return int(response.json()["imported"])

            # Two imports in flight: the server parses one while it writes the other, and
            # this process generates the next body meanwhile.
            with ThreadPoolExecutor(IMPORTS_IN_FLIGHT) as pool:
                pending: deque[Future[int]] = deque()
                lines = import_lines(user, n, model, dim, SEED + n)
                for body in chunked(lines, IMPORT_CHUNK_BYTES):
                    pending.append(pool.submit(post, body))
                    if len(pending) >= IMPORTS_IN_FLIGHT:
                        imported += pending.popleft().result()
                imported += sum(f.result() for f in pending)
            timings[n] = time.perf_counter() - started
            print(
                f"seeded {user}: {imported} memories + {len(facts())} facts in "
                f"{timings[n]:.1f}s ({imported / timings[n]:.0f}/s)",
                flush=True,
            )
    return timings


def litellm_target(base_url: str, master_key: str) -> Target:
    return Target("litellm", base_url, {"authorization": f"Bearer {master_key}"})


# ---------------------------------------------------------------- the run


async def run_rounds(
    targets: list[Target], opts: Options, results: Results, bodies: BodyPool
) -> None:
    async with load_client(opts.client, max(opts.concurrency), len(targets), bodies) as client:
        for target in list(targets):
            problem = await check_target(client, target)
            if problem:
                print(f"SKIPPING {target.name}: {problem}", file=sys.stderr)
                targets.remove(target)
        # Objects alive now live for the whole run; freezing them keeps the collector's
        # full passes (and their pauses in our timings) short.
        gc.collect()
        gc.freeze()
        for round_no in range(opts.rounds):
            started = time.perf_counter()
            await one_round(client, targets, opts, results)
            print(
                f"round {round_no + 1}/{opts.rounds} done in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
        results.statuses.update(client.statuses)


async def one_round(
    client: LoadClient, targets: list[Target], opts: Options, results: Results
) -> None:
    client.phase = "c1"
    for target in targets:
        if target.admin_key is not None:
            results.drain_waits.append(await ingestion_drained(target))
        samples = await sequential(client, target, opts.requests)
        results.add_sequential(
            target.name, samples.plain, samples.ttfc, samples.total, samples.errors
        )
    for concurrency in opts.concurrency:
        for stream in (False, True):
            client.phase = f"c{concurrency} {'stream' if stream else 'plain'}"
            for target in targets:
                rps, errors = await throughput(client, target, concurrency, opts.window_s, stream)
                results.add_throughput(target.name, concurrency, stream, rps, errors)


DRAIN_TIMEOUT_S = 300.0


async def ingestion_drained(target: Target) -> float:
    """Wait until the server has no captured exchange left to ingest; the seconds waited.

    A throughput window with memory on captures every exchange it completes (hundreds a
    second), and ingestion embeds them in the background at a fraction of that rate, so it
    keeps the server's cores busy for seconds to minutes afterwards. Concurrency-1 latency
    is what one conversation at a time costs, its own captures included; measured on top of
    another phase's backlog, it was that phase's figure instead."""
    assert target.admin_key is not None
    url = target.base_url.removesuffix("/v1") + "/admin/overview"
    headers = {"authorization": f"Bearer {target.admin_key}"}
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30.0) as http:
        while time.perf_counter() - started < DRAIN_TIMEOUT_S:
            backlog = (await http.get(url, headers=headers)).raise_for_status().json()["ingestion"]
            if backlog["capture_queue"] == 0 and backlog["write_backlog"] == 0:
                break
            await asyncio.sleep(0.5)
        else:
            print(f"{target.name}: ingestion still busy after {DRAIN_TIMEOUT_S:.0f}s", flush=True)
    return time.perf_counter() - started


async def profile_memshadow(
    targets: list[Target], pid: int, opts: Options, out: Path
) -> Path | None:
    """Record the MemShadow server with py-spy under plain load (the highest throughput
    concurrency unless ``--profile-concurrency``): the named target, else the memory target
    with the most memories, else any MemShadow target."""
    ours = [t for t in targets if t.name.startswith("memshadow")]
    if opts.profile_target is not None:
        ours = [t for t in ours if t.name == opts.profile_target]
    candidates = [t for t in ours if t.memory] or ours
    target = candidates[-1] if candidates else None
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if target is None or not Path(py_spy).exists():
        print("profile skipped: no memshadow target or no py-spy (pip install py-spy)")
        return None
    concurrency = opts.profile_concurrency or max(opts.concurrency)
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "250",
            "--nonblocking",
            "--duration",
            str(int(opts.profile_s) + 1),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(0.5)  # let py-spy attach before the load starts
        async with load_client(opts.client, concurrency, 1) as client:
            client.phase = "profile"
            rps, _ = await throughput(client, target, concurrency, opts.profile_s, False)
        shares = ", ".join(f"{s} {c}" for (_, _, s), c in sorted(client.statuses.items()))
        print(f"profiled {target.name} at {rps:.0f} req/s ({shares or 'no memory status'})")
        _, err = await asyncio.to_thread(recorder.communicate, None, opts.profile_s + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if recorder.returncode != 0 or not out.exists():
        print(f"profile failed: {err.decode(errors='replace')[-500:]}")
        return None
    return out


def run(opts: Options) -> Results:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ms-bench-")))
        fleet = Fleet(workdir)
        stack.callback(fleet.close)  # runs before the temp dir is removed
        results = Results(opts_summary(opts))
        targets = start_targets(fleet, opts, results)
        bodies = BodyPool(synthetic_questions(QUESTION_POOL))
        run_loop(run_rounds(targets, opts, results, bodies))
        memshadow = next((t for t in targets if t.name.startswith("memshadow")), None)
        if memshadow is not None:
            results.degraded_reasons = degraded_reasons(memshadow)
        if opts.profile_path is not None:
            pid = fleet.pid_of("memshadow")
            if pid is not None:
                run_loop(profile_memshadow(targets, pid, opts, opts.profile_path))
        return results


def degraded_reasons(target: Target) -> dict[str, float]:
    """``memshadow_memory_degraded_total`` by reason, from the server's /metrics."""
    url = target.base_url.removesuffix("/v1") + "/metrics"
    try:
        text = httpx.get(url, headers=target.headers, timeout=10.0, trust_env=False).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("memshadow_memory_degraded_total{"):
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[-1].split('"', 1)[0]
            out[reason] = float(value)
    return out


def opts_summary(opts: Options) -> dict[str, Any]:
    return {
        "requests_per_round": opts.requests,
        "rounds": opts.rounds,
        "concurrency": opts.concurrency,
        "window_s": opts.window_s,
        "memory_modes": opts.memory,
        "chunk_delay_ms": opts.chunk_delay_ms,
        "client": opts.client,
        "cpus": os.cpu_count(),
        "memories": opts.memories,
        "question_pool": QUESTION_POOL,
    }


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        type=int,
        help="concurrency-1 requests per target per round, each of plain and "
        "streamed (default 200; 150 with --memories)",
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds (default 5; 3 with --memories)"
    )
    parser.add_argument(
        "--concurrency",
        default="32,16",
        help="throughput concurrencies, comma-separated (default 32,16)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=2.0,
        help="seconds of load per throughput window (default 2)",
    )
    parser.add_argument(
        "--memory",
        default="off",
        help="MemShadow X-Memory-Mode values to measure, comma-separated: "
        "off,on,read,write (default off)",
    )
    parser.add_argument(
        "--targets",
        default="direct,floor,memshadow,litellm",
        help="which proxies to start (direct is always measured)",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="mock upstream delay between SSE chunks (default 0)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the rounds, py-spy the MemShadow server under plain load "
        "(see --profile-concurrency); write raw stacks here",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument(
        "--profile-concurrency",
        type=int,
        help="concurrency of the profiled load (default: the highest of --concurrency); "
        "1 shows where one request's latency goes",
    )
    parser.add_argument(
        "--profile-target",
        help="which target to load while profiling (default: the memory-on target with the "
        "most memories, else memshadow[off])",
    )
    parser.add_argument(
        "--memories",
        default="",
        help="seed each memory target's user with this many synthetic memories before "
        "measuring, comma-separated for several sizes (e.g. 10000,100000); one "
        "memshadow[on,<size>] target per size",
    )
    parser.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="load generator's HTTP client (default aiohttp: cheaper)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    args = parser.parse_args(argv)
    memories = sorted({int(n) for n in args.memories.split(",") if n.strip()})
    if any(n <= 0 for n in memories):
        parser.error("--memories takes positive sizes")
    # Seeding and the memory targets' slower requests cost minutes: fewer, shorter rounds
    # keep a full run with --memories near 8 minutes on 2 busy cores.
    if args.requests is None:
        args.requests = 150 if memories else 200
    if args.rounds is None:
        args.rounds = 3 if memories else 5
    if args.quick:
        args.requests, args.rounds, args.window = 30, 2, 0.5
        # Smoke sizes: the largest becomes 2,000, the others in proportion.
        if memories:
            memories = sorted({max(100, n * 2000 // memories[-1]) for n in memories})
    return Options(
        requests=max(1, args.requests),
        rounds=max(1, args.rounds),
        concurrency=[int(c) for c in args.concurrency.split(",") if c],
        window_s=min(args.window, MAX_WINDOW_SECONDS),
        memory=[m.strip() for m in args.memory.split(",") if m.strip()],
        targets=[t.strip() for t in args.targets.split(",") if t.strip()],
        chunk_delay_ms=args.chunk_delay_ms,
        json_path=args.json,
        profile_path=args.profile,
        profile_s=min(args.profile_seconds, MAX_WINDOW_SECONDS),
        profile_target=args.profile_target,
        profile_concurrency=args.profile_concurrency,
        client=args.client,
        memories=memories,
    )


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that the cleanup in ``run`` runs, as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(argv)
    try:
        with sigterm_as_exit():
            results = run(opts)
    except KeyboardInterrupt:
        # run() has already stopped the servers and removed the temp dir on the way out.
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
    print_report(results)
    if opts.profile_path is not None and opts.profile_path.exists():
        print_profile(opts.profile_path)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results.to_json(), indent=2, allow_nan=False))
        print(f"figures written to {opts.json_path}")


if __name__ == "__main__":
    main()
