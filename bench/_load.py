"""The load generator for ``bench/overhead.py``: targets, HTTP clients, load patterns.

Everything here runs in the benchmark's own process, apart from the servers under test.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
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
# Distinct user questions the load rotates through (see BodyPool). Well above the proxy's
# query-embedding LRU (1,024 entries by default), so a question recurs only after the cache
# has forgotten it: memory-on requests pay a real embedding, as a new question would.
QUESTION_POOL = 12_000
SEED = 20240604

# ---------------------------------------------------------------- synthetic text
# One vocabulary for the questions and the seeded memories, so that BM25 finds postings for
# the questions' words (some common, some rare), as it would in a real user's history.
PEOPLE = (
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas",
    "Kofi", "Lena", "Marta", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tomas",
    "Ulla", "Vera", "Wei", "Yusuf", "Zoe", "my sister", "my brother", "my manager",
    "the landlord", "my dentist", "grandma", "the neighbours", "my coach", "the accountant",
)  # fmt: skip
OBJECTS = (
    "passport", "car keys", "laptop charger", "blue umbrella", "gym card", "spare glasses",
    "library book", "insurance papers", "bike lock", "winter coat", "headphones",
    "birth certificate", "hiking boots", "camera", "tax forms", "wedding album", "drill",
    "tent", "guitar", "sewing kit", "house deeds", "vaccination card", "yoga mat",
    "travel adapter", "old phone", "garden shears", "suitcase", "piano music", "toolbox",
    "chess set", "recipe notebook", "blender", "printer ink", "ski goggles", "fishing rod",
    "backup drive", "paint brushes", "tennis racket", "sleeping bag", "rain jacket",
    "coffee grinder", "spare tyre", "lease contract", "medicine box", "phone charger",
    "ID card", "work badge", "kayak paddle", "picnic blanket", "sunglasses",
    "guest keys", "warranty card", "photo prints", "lunch box", "knitting needles",
    "board games", "night lamp", "first aid kit", "car manual", "bank token",
)  # fmt: skip
PLACES = (
    "hall cupboard", "top drawer of the desk", "garage shelf", "attic", "blue box under the bed",
    "kitchen cabinet", "car boot", "study bookcase", "basement", "bathroom cabinet",
    "wardrobe", "shoe rack", "safe", "office locker", "garden shed", "sideboard",
)  # fmt: skip
ACTIVITIES = (
    "hiking", "swimming", "a road trip", "the Lisbon trip", "camping", "a dinner party",
    "the marathon", "skiing", "a job interview", "moving house", "the school fair",
    "sailing", "a concert", "the wedding", "a chess tournament", "painting the kitchen",
    "the beach weekend", "a museum visit", "cycling to work", "the book club",
)  # fmt: skip
TIMES = (
    "tomorrow", "next week", "this weekend", "on Monday", "on Friday", "next month",
    "before the holidays", "in March", "after work", "tonight", "in the summer",
    "last year", "yesterday", "two weeks ago", "at Easter", "in the morning",
)  # fmt: skip
FOODS = (
    "sushi", "lentil soup", "spicy curry", "pancakes", "oysters", "olives", "blue cheese",
    "mushroom risotto", "falafel", "dark chocolate", "grapefruit", "coriander", "tofu",
    "pickled herring", "cheesecake", "peanut butter", "kimchi", "ramen", "fig jam",
)  # fmt: skip
PROJECTS = (
    "website redesign", "garden renovation", "budget review", "thesis", "kitchen remodel",
    "podcast", "quarterly report", "family reunion", "data migration", "grant proposal",
    "photo book", "tax return", "mobile app", "charity run", "novel draft",
)  # fmt: skip
TOPICS = (
    "mortgage rates", "sourdough baking", "Roman history", "container gardening",
    "machine learning", "birdwatching", "solar panels", "Spanish verbs", "jazz piano",
    "sleep hygiene", "electric cars", "stoic philosophy", "watercolour", "chess openings",
    "composting", "retirement savings", "trail running", "home networking", "bee keeping",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ADJECTIVES = (
    "new", "old", "red", "cheap", "expensive", "broken", "borrowed", "second-hand",
    "waterproof", "tiny", "heavy", "vintage", "spare", "lost", "favourite",
)  # fmt: skip

QUESTION_TEMPLATES = (
    "Where did I put my {obj}?",
    "Do you remember where I keep my {obj}?",
    "I need my {obj} {time}; where is it?",
    "What did I tell you about my {obj} {time}?",
    "Can you remind me what I decided about the {obj} for {act}?",
    "Help me plan {act} {time}. Do I need my {obj}?",
    "Write a short note to {person} asking to return my {obj}.",
    "Summarise what {person} said about {act}.",
    "What does {person} like to eat? I am cooking for them {time}.",
    "When is the {project} deadline, and who owns the {topic} part?",
    "Give me three tips about {topic} before {act}.",
    "Did {person} recommend anything about {topic}?",
)


MEMORY_TEMPLATES = (
    "{person} mentioned that the {obj} is in the {place} since {time}.",
    "I went {act} with {person} {time} and forgot my {obj} at home.",
    "{person} loves {food} but cannot stand {food2}.",
    "Meeting with {person} about the {project} moved to {day} at {hour}.",
    "Bought the {adj} {obj} for {act}; order number {number}.",
    "{person} recommended reading about {topic} before {act}.",
    "Remember to call {person} about the {project} on {day}.",
    "The {project} deadline is {day}; {person} owns the {topic} part.",
    "Lent my {adj} {obj} to {person} {time}, still not returned.",
    "I want to learn more about {topic} {time}, maybe with {person}.",
    "Dinner at {person}'s place {time}: they served {food} and {food2}.",
    "Paid {number} for the {project}; {person} will send the invoice on {day}.",
)
# Facts with real embeddings (stored through the normal path): half the objects have one,
# so questions about those are answered (status ok) and about the rest mostly abstain.
FACT_OBJECTS = OBJECTS[::2]


def facts() -> list[str]:
    return [
        f"I keep my {obj} in the {PLACES[i % len(PLACES)]}." for i, obj in enumerate(FACT_OBJECTS)
    ]


def synthetic_memory(rng: random.Random) -> str:
    """One varied memory sentence (content only: its vector is random, see overhead.py)."""
    return rng.choice(MEMORY_TEMPLATES).format(
        obj=rng.choice(OBJECTS), time=rng.choice(TIMES), act=rng.choice(ACTIVITIES),
        person=rng.choice(PEOPLE), project=rng.choice(PROJECTS), topic=rng.choice(TOPICS),
        place=rng.choice(PLACES), food=rng.choice(FOODS), food2=rng.choice(FOODS),
        day=rng.choice(DAYS), hour=f"{rng.randint(7, 20)}:{rng.choice(('00', '15', '30', '45'))}",
        adj=rng.choice(ADJECTIVES), number=rng.randint(100, 99_999),
    )  # fmt: skip


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        obj=rng.choice(OBJECTS), time=rng.choice(TIMES), act=rng.choice(ACTIVITIES),
        person=rng.choice(PEOPLE), project=rng.choice(PROJECTS), topic=rng.choice(TOPICS),
    )  # fmt: skip


def synthetic_questions(n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct user questions, the same for every call with the same seed."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(_fill(rng, rng.choice(QUESTION_TEMPLATES)), None)
    return list(seen)


def _chat_body(question: str, stream: bool) -> bytes:
    payload: dict[str, object] = {"model": MODEL}
    if stream:
        payload["stream"] = True
    payload["messages"] = [{"role": "user", "content": question}]
    return json.dumps(payload).encode()


class BodyPool:
    """Pre-encoded request bodies, one per distinct question, handed out in rotation.

    Picking a body is an index and a list lookup; nothing is serialised per request. Each
    target has its own cursor over the same list, so a target asks a question again only
    after all the others: with more questions than MemShadow's query-embedding cache holds
    (1,024), an LRU never hits on a cycle, and every memory recall pays its embedding. (One
    cursor shared by every target let the direct target's throughput windows carry the
    rotation round fast enough that MemShadow met its own recent questions again: whole
    rounds measured 10-13 ms of cache hits against 21-23 ms of real recalls.) The cursors
    start an eighth of the pool apart (1,500 questions, more than the cache), so two memory
    targets of one server, which share its cache, do not ask each other's recent questions.
    """

    def __init__(self, questions: list[str]) -> None:
        self._plain = [_chat_body(q, False) for q in questions]
        self._stream = [_chat_body(q, True) for q in questions]
        self._n = len(questions)
        self._cursor: dict[str, int] = {}

    def __len__(self) -> int:
        return self._n

    def _next(self, target: str) -> int:
        start = len(self._cursor) * (self._n // 8)
        i = self._cursor.get(target, start - 1) + 1
        self._cursor[target] = i
        return i % self._n

    def plain(self, target: str) -> bytes:
        return self._plain[self._next(target)]

    def stream(self, target: str) -> bytes:
        return self._stream[self._next(target)]


def default_bodies() -> BodyPool:
    return BodyPool(synthetic_questions(QUESTION_POOL))


@dataclass(frozen=True)
class Target:
    """One way of reaching the mock: a URL and the headers that authenticate there."""

    name: str
    base_url: str
    headers: dict[str, str]
    # A memory target: the load client tallies its responses' X-Memory-Status.
    memory: bool = False
    # How many memories were seeded for its user (None: not seeded).
    memories: int | None = None
    # A MemShadow target: its admin key, to read the ingestion backlog (GET /admin/overview).
    admin_key: str | None = None

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


class LoadClient(Protocol):
    """The load generator's HTTP client: the same one for every target, so its cost cancels in
    the added latency, but it shares the 2 cores with the servers, so it must be cheap.

    Bodies come from a :class:`BodyPool`. For memory targets, every response's
    ``X-Memory-Status`` is tallied in ``statuses`` under (target, phase, status); the caller
    sets ``phase`` (``c1``, ``c32`` …) before each part of a round.
    """

    statuses: Counter[tuple[str, str, str]]
    phase: str

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

    def __init__(self, pool_size: int, bodies: BodyPool) -> None:
        connector = aiohttp.TCPConnector(limit=pool_size, keepalive_timeout=300.0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30.0), auto_decompress=False
        )
        self._bodies = bodies
        self.statuses: Counter[tuple[str, str, str]] = Counter()
        self.phase = "c1"

    async def plain(self, target: Target) -> float | None:
        started = time.perf_counter()
        try:
            async with self._session.post(
                target.chat_url, data=self._bodies.plain(target.name), headers=target.headers
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        elapsed = time.perf_counter() - started
        if target.memory:
            _tally(self.statuses, target, self.phase, response.headers)
        return elapsed if response.status == 200 else None

    async def stream(self, target: Target) -> tuple[float, float] | None:
        started = time.perf_counter()
        first = 0.0
        try:
            async with self._session.post(
                target.chat_url, data=self._bodies.stream(target.name), headers=target.headers
            ) as response:
                async for chunk in response.content.iter_any():
                    if not first and chunk:
                        first = time.perf_counter() - started
        except (aiohttp.ClientError, TimeoutError):
            return None
        elapsed = time.perf_counter() - started
        if target.memory:
            _tally(self.statuses, target, self.phase, response.headers)
        return (first, elapsed) if response.status == 200 else None

    async def fetch(self, target: Target, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(target.chat_url, data=body, headers=target.headers) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self._session.close()


class HttpxLoad:
    """``--client httpx``: the client most apps use; heavier (see :class:`AiohttpLoad`)."""

    def __init__(self, pool_size: int, bodies: BodyPool) -> None:
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._client = httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False)
        self._bodies = bodies
        self.statuses: Counter[tuple[str, str, str]] = Counter()
        self.phase = "c1"

    async def plain(self, target: Target) -> float | None:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                target.chat_url, content=self._bodies.plain(target.name), headers=target.headers
            )
        except httpx.HTTPError:
            return None
        elapsed = time.perf_counter() - started
        if target.memory:
            _tally(self.statuses, target, self.phase, response.headers)
        return elapsed if response.status_code == 200 else None

    async def stream(self, target: Target) -> tuple[float, float] | None:
        started = time.perf_counter()
        first = 0.0
        try:
            async with self._client.stream(
                "POST",
                target.chat_url,
                content=self._bodies.stream(target.name),
                headers=target.headers,
            ) as response:
                async for chunk in response.aiter_raw():
                    if not first and chunk:
                        first = time.perf_counter() - started
        except httpx.HTTPError:
            return None
        elapsed = time.perf_counter() - started
        if target.memory:
            _tally(self.statuses, target, self.phase, response.headers)
        return (first, elapsed) if response.status_code == 200 else None

    async def fetch(self, target: Target, body: bytes) -> tuple[int, bytes]:
        response = await self._client.post(target.chat_url, content=body, headers=target.headers)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


def _tally(
    statuses: Counter[tuple[str, str, str]], target: Target, phase: str,
    headers: Mapping[str, str],
) -> None:  # fmt: skip
    statuses[(target.name, phase, headers.get("x-memory-status", "missing"))] += 1


@asynccontextmanager
async def load_client(
    kind: str, max_concurrency: int, n_targets: int, bodies: BodyPool | None = None
) -> AsyncIterator[LoadClient]:
    # One keep-alive pool for all targets, wide enough for every target's connections at once.
    size = max_concurrency * n_targets + 8
    pool = bodies if bodies is not None else default_bodies()
    client: LoadClient = HttpxLoad(size, pool) if kind == "httpx" else AiohttpLoad(size, pool)
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
