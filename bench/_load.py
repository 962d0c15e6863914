"""The load generator for ``bench/overhead.py``: targets, HTTP clients, load patterns.

Everything here runs in the benchmark's own process, apart from the servers under test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import httpx

MODEL = "mock-model"
EXPECTED_TEXT = b"Hello from the mock upstream."
PLAIN_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]}
).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Say hello."}]}
).encode()
# Hard caps so that no setting of the flags can turn this into an unbounded load test.
MAX_REQUESTS_PER_WINDOW = 50_000
MAX_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Target:
    """One way of reaching the mock: a URL and the headers that authenticate there."""

    name: str
    base_url: str
    headers: dict[str, str]

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


class LoadClient(Protocol):
    """The load generator's HTTP client: the same one for every target, so its cost cancels in
    the added latency, but it shares the 2 cores with the servers, so it must be cheap."""

    async def plain(self, target: Target) -> float | None:
        """One non-streamed request: its latency in seconds, or None if it failed."""

    async def stream(self, target: Target) -> tuple[float, float] | None:
        """One streamed request: (time to first body chunk, total) in seconds, or None."""

    async def fetch(self, target: Target, body: bytes) -> tuple[int, bytes]:
        """Status and whole body, for the correctness check."""

    async def aclose(self) -> None: ...


class AiohttpLoad:
    """Default client. Measured here: ≈ 70-160 µs of CPU per request against httpx's ≈ 0.5 ms
    at concurrency 1 and ≈ 1.2 ms at 32 (its connection pool scans every connection), which
    would eat most of a core and cap every target near the same figure."""

    def __init__(self, pool_size: int) -> None:
        connector = aiohttp.TCPConnector(limit=pool_size, keepalive_timeout=300.0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30.0), auto_decompress=False
        )

    async def plain(self, target: Target) -> float | None:
        started = time.perf_counter()
        try:
            async with self._session.post(
                target.chat_url, data=PLAIN_BODY, headers=target.headers
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return time.perf_counter() - started if response.status == 200 else None

    async def stream(self, target: Target) -> tuple[float, float] | None:
        started = time.perf_counter()
        first = 0.0
        try:
            async with self._session.post(
                target.chat_url, data=STREAM_BODY, headers=target.headers
            ) as response:
                async for chunk in response.content.iter_any():
                    if not first and chunk:
                        first = time.perf_counter() - started
        except (aiohttp.ClientError, TimeoutError):
            return None
        return (first, time.perf_counter() - started) if response.status == 200 else None

    async def fetch(self, target: Target, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(target.chat_url, data=body, headers=target.headers) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self._session.close()


class HttpxLoad:
    """``--client httpx``: the client most apps use; heavier (see :class:`AiohttpLoad`)."""

    def __init__(self, pool_size: int) -> None:
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._client = httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False)

    async def plain(self, target: Target) -> float | None:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                target.chat_url, content=PLAIN_BODY, headers=target.headers
            )
        except httpx.HTTPError:
            return None
        return time.perf_counter() - started if response.status_code == 200 else None

    async def stream(self, target: Target) -> tuple[float, float] | None:
        started = time.perf_counter()
        first = 0.0
        try:
            async with self._client.stream(
                "POST", target.chat_url, content=STREAM_BODY, headers=target.headers
            ) as response:
                async for chunk in response.aiter_raw():
                    if not first and chunk:
                        first = time.perf_counter() - started
        except httpx.HTTPError:
            return None
        return (first, time.perf_counter() - started) if response.status_code == 200 else None

    async def fetch(self, target: Target, body: bytes) -> tuple[int, bytes]:
        response = await self._client.post(target.chat_url, content=body, headers=target.headers)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


@asynccontextmanager
async def load_client(kind: str, max_concurrency: int, n_targets: int) -> AsyncIterator[LoadClient]:
    # One keep-alive pool for all targets, wide enough for every target's connections at once.
    size = max_concurrency * n_targets + 8
    client: LoadClient = HttpxLoad(size) if kind == "httpx" else AiohttpLoad(size)
    try:
        yield client
    finally:
        await client.aclose()


async def check_target(client: LoadClient, target: Target) -> str | None:
    """A correctness check before timing anything: why the target is unusable, or None."""
    status, body = await client.fetch(target, PLAIN_BODY)
    if status != 200 or EXPECTED_TEXT not in body:
        return f"plain request: {status} {body[:300]!r}"
    status, body = await client.fetch(target, STREAM_BODY)
    if status != 200 or not body.rstrip().endswith(b"data: [DONE]"):
        return f"streamed request: {status} {body[-300:]!r}"
    return None


@dataclass
class Sequential:
    """Concurrency-1 samples of one target in one round."""

    plain: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0


async def sequential(client: LoadClient, target: Target, n: int) -> Sequential:
    out = Sequential()
    for _ in range(3):  # re-open a keep-alive connection the server may have dropped while idle
        await client.plain(target)
    for _ in range(n):
        latency = await client.plain(target)
        if latency is None:
            out.errors += 1
        else:
            out.plain.append(latency)
    for _ in range(n):
        timing = await client.stream(target)
        if timing is None:
            out.errors += 1
        else:
            out.ttfc.append(timing[0])
            out.total.append(timing[1])
    return out


async def throughput(
    client: LoadClient, target: Target, concurrency: int, window_s: float, stream: bool
) -> tuple[float, int]:
    """Closed-loop load for ``window_s`` seconds: (completed requests/s, errors)."""

    async def one() -> bool:
        if stream:
            return await client.stream(target) is not None
        return await client.plain(target) is not None

    # Warm the pool to full width first so connection set-up is not in the window.
    await asyncio.gather(*(one() for _ in range(concurrency)))
    done, errors = 0, 0
    started = time.perf_counter()
    deadline = started + min(window_s, MAX_WINDOW_SECONDS)

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline and done + errors < MAX_REQUESTS_PER_WINDOW:
            if await one():
                done += 1
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), errors
