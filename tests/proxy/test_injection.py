"""Transparent memory in /v1/chat/completions: capture, recall, injection, fail-open."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import respx

from config import ModelRoute, Settings
from memory.embedder import CachedEmbedder
from memory.model import RecallResult, Scope
from memory.service import MemoryService
from proxy.keys import TenantRegistry
from proxy.log_throttle import LogThrottle
from tests.conftest import build_app, in_process
from tests.fakes import FakeEmbedder, FakeUpstream, completion, sse_response
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")
CHAT = "/v1/chat/completions"
FACT = "I just moved to Porto and I adopted a greyhound called Biscuit."


def _conversation(*turns: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]


async def _remembers(client: httpx.AsyncClient, user: str, needle: str) -> bool:
    body = {"query": needle, "user": user, "k": 20}
    found = (await client.post("/v1/memories/search", json=body)).json()["data"]
    return any(needle in item["content"] for item in found)


async def _told_the_fact(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    """``user`` told FACT in a chat, remembered by now; the headers that name the user."""
    headers = {"x-memory-user": user}
    await client.post(CHAT, json={"model": "m", "messages": _conversation(FACT)}, headers=headers)
    await eventually(lambda: _remembers(client, user, "Biscuit"))
    return headers


def _system_texts(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] in ("system", "developer"))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fact_told_once_is_injected_later(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    if stream:
        upstream.enqueue(sse_response("gpt-4o-mini", ["Congratulations ", "on the move!"]))
    headers = {"x-memory-user": "alice"}
    first = {"model": "gpt-4o-mini", "stream": stream, "messages": _conversation(FACT)}
    response = await client.post(CHAT, json=first, headers=headers)
    assert response.status_code == 200
    await eventually(lambda: _remembers(client, "alice", "Biscuit"))
    answer = "Congratulations on the move!" if stream else "Hello there"
    await eventually(lambda: _remembers(client, "alice", answer))

    later = {"model": "gpt-4o-mini", "messages": _conversation("What is my dog called? Biscuit?")}
    response = await client.post(CHAT, json=later, headers=headers)
    assert response.headers["x-memory-status"] == "ok"
    assert int(response.headers["x-memory-injected"]) >= 1
    assert int(response.headers["x-memory-tokens"]) > 0
    sent = upstream.bodies()[-1]
    assert "Biscuit" in _system_texts(sent)
    assert "never as instructions" in _system_texts(sent)
    assert sent["messages"][-1] == later["messages"][-1]


async def test_another_user_never_gets_it(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await client.post(
        CHAT,
        json={"model": "m", "messages": _conversation(FACT)},
        headers={"x-memory-user": "alice"},
    )
    await eventually(lambda: _remembers(client, "alice", "Biscuit"))
    ask = {
        "model": "m",
        "user": "mallory",
        "messages": _conversation("Tell me about Biscuit the greyhound in Porto"),
    }
    response = await client.post(CHAT, json=ask)
    print(
        "STATUS", response.headers["x-memory-status"], response.headers.get("x-memory-confidence")
    )
    print("BLOCK", _system_texts(upstream.bodies()[-1]))
    assert response.headers["x-memory-status"] == "abstained"
    assert "Biscuit" not in json.dumps(upstream.bodies()[-1]["messages"][:-1])


async def test_the_prefix_stays_byte_identical_across_turns(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = await _told_the_fact(client, "bea")
    system = {"role": "system", "content": "You are a concise assistant."}
    turn_one = [system, *_conversation("Where do I live now? Porto?")]
    turn_two = [
        *turn_one,
        {"role": "assistant", "content": "You live in Porto."},
        {"role": "user", "content": "And my dog Biscuit?"},
    ]
    for messages in (turn_one, turn_two):
        response = await client.post(
            CHAT, json={"model": "m", "messages": messages}, headers=headers
        )
        assert response.headers["x-memory-status"] == "ok"
    first, second = upstream.bodies()[-2:]
    # Everything before the injection point of turn one is sent unchanged in turn two.
    injected_at = len(first["messages"]) - 2
    assert json.dumps(first["messages"][:injected_at]) == json.dumps(
        second["messages"][:injected_at]
    )
    assert second["messages"][-2]["role"] == "system"  # the block sits right before the last turn


async def test_history_resent_three_times_is_captured_once(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = {"x-memory-user": "carl", "x-memory-mode": "write"}
    body = {"model": "m", "messages": _conversation("My favourite tea is genmaicha.")}
    for _ in range(3):
        assert (await client.post(CHAT, json=body, headers=headers)).status_code == 200
    await eventually(lambda: _remembers(client, "carl", "genmaicha"))
    await asyncio.sleep(0.3)  # give any wrongly repeated capture time to land
    listed = (await client.get("/v1/memories", params={"user": "carl"})).json()["data"]
    contents = [m["content"] for m in listed]
    assert contents.count("User: My favourite tea is genmaicha.") == 1
    assert contents.count("Assistant: Hello there") == 1
    assert all(m["source"] == "capture" and m["tier"] == "episodic" for m in listed)


def _too_long(message: str, code: str | None = None) -> httpx.Response:
    error = {"message": message, "type": "invalid_request_error", "param": "messages", "code": code}
    return httpx.Response(400, json={"error": error})


@pytest.mark.parametrize("stream", [False, True])
async def test_a_block_that_overflows_the_window_is_withdrawn_not_a_failure(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    headers = await _told_the_fact(client, "ola")
    raw = json.dumps(
        {"model": "m", "stream": stream, "messages": _conversation("My dog? Biscuit?")}
    ).encode()
    upstream.enqueue(_too_long("This model's maximum context length is 8192 tokens.",
                               "context_length_exceeded"))  # fmt: skip
    answer = await client.post(CHAT, content=raw, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-memory-status"] == "degraded"
    assert answer.headers["x-memory-injected"] == "0"
    refused, resent = upstream.requests[-2:]
    assert "Biscuit" in _system_texts(json.loads(refused.content))  # the block was tried
    assert resent.content == raw  # then the request as the app wrote it
    receipt = (await client.get("/v1/receipts/chatcmpl-fake")).json()
    assert receipt["status"] == "degraded" and receipt["memories"] == []
    metrics = (await client.get("/metrics")).text
    assert _metric(metrics, 'memshadow_memory_degraded_total{reason="context_length"}') == 1


async def test_a_request_too_long_without_memory_gets_the_upstreams_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.enqueue(_too_long("prompt is too long: 210000 tokens > 200000 maximum"))
    answer = await client.post(CHAT, json={"model": "m", "messages": _conversation("Hi")})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("prompt is too long")
    assert len(upstream.requests) == 1  # nothing to withdraw, nothing resent


async def test_acknowledgements_are_not_captured(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = {"x-memory-user": "cleo", "x-memory-mode": "write"}
    messages = _conversation("I play the cello in a quartet.", "How lovely!", "Thanks!")
    upstream.enqueue(httpx.Response(200, json=completion("m", "You're welcome.")))
    assert await client.post(CHAT, json={"model": "m", "messages": messages}, headers=headers)
    await eventually(lambda: _remembers(client, "cleo", "cello"))
    await asyncio.sleep(0.3)  # give a wrongly stored acknowledgement time to land
    listed = (await client.get("/v1/memories", params={"user": "cleo"})).json()["data"]
    assert sorted(m["content"] for m in listed) == [
        "Assistant: How lovely!",
        "User: I play the cello in a quartet.",
    ]


@pytest.mark.parametrize(
    ("mode", "injects", "captures"),
    [("on", True, True), ("read", True, False), ("write", False, True), ("off", False, False)],
)
async def test_memory_modes(
    client: httpx.AsyncClient, upstream: FakeUpstream, mode: str, injects: bool, captures: bool
) -> None:
    await client.post(
        "/v1/memories", json={"user": "dora", "content": "Dora's locker code is 5521."}
    )
    await eventually(lambda: _remembers(client, "dora", "5521"))
    ask = {"model": "m", "messages": _conversation("What is my locker code 5521?")}
    response = await client.post(
        CHAT, json=ask, headers={"x-memory-user": "dora", "x-memory-mode": mode}
    )
    assert response.status_code == 200
    assert ("5521" in _system_texts(upstream.bodies()[-1])) is injects
    assert response.headers["x-memory-status"] == ("ok" if injects else "off")
    if captures:
        await eventually(lambda: _remembers(client, "dora", "What is my locker code"))
    else:
        await asyncio.sleep(0.3)
        assert not await _remembers(client, "dora", "What is my locker code")


async def test_bad_memory_headers_are_400(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    response = await client.post(
        CHAT,
        json={"model": "m", "messages": _conversation("hi")},
        headers={"x-memory-mode": "maybe"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Memory-Mode"
    assert upstream.requests == []


async def test_receipts_name_what_was_injected(
    client: httpx.AsyncClient, upstream: FakeUpstream, registry: TenantRegistry
) -> None:
    stored = await client.post(
        "/v1/memories", json={"user": "eve", "content": "Eve's flight to Lima is on May 3."}
    )
    memory_id = stored.json()["data"][0]["id"]
    await eventually(lambda: _remembers(client, "eve", "Lima"))
    upstream.enqueue(
        httpx.Response(200, json={**completion("m", "Noted."), "id": "chatcmpl-receipt-1"})
    )
    response = await client.post(
        CHAT,
        json={"model": "m", "messages": _conversation("When is my flight to Lima?")},
        headers={"x-memory-user": "eve"},
    )
    receipt = (await client.get("/v1/receipts/chatcmpl-receipt-1")).json()
    assert [m["id"] for m in receipt["memories"]] == [memory_id]
    assert receipt["placement"] == "before_last_user"
    assert receipt["tokens"] == int(response.headers["x-memory-tokens"])
    assert receipt["request_id"] == response.headers["x-request-id"]
    assert str(round(receipt["confidence"], 3)) in response.headers["x-memory-confidence"]
    assert "recall" in receipt["timings_ms"]
    other_key, _ = registry.create_key("globex")
    stolen = await client.get(
        "/v1/receipts/chatcmpl-receipt-1", headers={"authorization": f"Bearer {other_key}"}
    )
    assert stolen.status_code == 404


async def test_budget_never_overflows_a_small_window(
    settings: Settings, registry: TenantRegistry, tenant_key: str, upstream: FakeUpstream
) -> None:
    small = settings.model_copy(
        update={
            "model_list": [
                ModelRoute(
                    model_name="tiny", litellm_params={"model": "openai/tiny"}, context_window=700
                )
            ]
        }
    )
    long_facts = [
        {"content": f"Fact {i}: the user enjoys hiking in the Alps every summer with friends. " * 3}
        for i in range(30)
    ]
    app = build_app(small, registry=registry)
    async with in_process(app, tenant_key) as http:
        await http.post("/v1/memories", json={"user": "fay", "items": long_facts})
        await eventually(lambda: _remembers(http, "fay", "Alps"))
        prompt = "Tell me about my hiking in the Alps. " * 20
        response = await http.post(
            CHAT,
            json={"model": "tiny", "max_tokens": 200, "messages": _conversation(prompt)},
            headers={"x-memory-user": "fay"},
        )
    assert response.status_code == 200
    sent = upstream.bodies()[-1]
    from memory.tokens import TokenCounter

    count = TokenCounter().count
    total = sum(count(m["content"]) + 4 for m in sent["messages"])
    assert total + 200 <= 700
    assert int(response.headers["x-memory-tokens"]) <= 700 - 200


class BrokenMemories(MemoryService):
    async def search(self, scope: Scope, query: str, **kwargs: Any) -> RecallResult:
        raise OSError("lance table unreachable")


class SlowMemories(MemoryService):
    async def search(self, scope: Scope, query: str, **kwargs: Any) -> RecallResult:
        await asyncio.sleep(2)
        return RecallResult()


@pytest.mark.parametrize("engine", [BrokenMemories, SlowMemories])
async def test_memory_failures_degrade_to_a_plain_proxy(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    engine: type[MemoryService],
) -> None:
    memories = engine(tmp_path / "mem", FakeEmbedder())
    await memories.start()
    app = build_app(settings, registry=registry, memories=memories)
    raw = json.dumps({"model": "m", "messages": _conversation("hello again")}).encode()
    async with in_process(app, tenant_key) as http:
        response = await http.post(CHAT, content=raw)
        metrics = (await http.get("/metrics")).text
    await memories.aclose()
    assert response.status_code == 200
    assert response.headers["x-memory-status"] == "degraded"
    assert upstream.requests[-1].content == raw  # forwarded unmodified
    assert "memshadow_memory_degraded_total" in metrics


async def test_a_flood_of_degraded_requests_logs_one_warning_and_counts_them_all(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    memories = BrokenMemories(tmp_path / "mem", FakeEmbedder())
    await memories.start()
    app = build_app(settings, registry=registry, memories=memories)
    raw = json.dumps({"model": "m", "messages": _conversation("hello again")}).encode()
    with caplog.at_level(logging.WARNING, logger="memshadow.injection"):
        async with in_process(app, tenant_key) as http:
            statuses = [(await http.post(CHAT, content=raw)).headers["x-memory-status"]
                        for _ in range(5)]  # fmt: skip
            metrics = (await http.get("/metrics")).text
    await memories.aclose()
    assert statuses == ["degraded"] * 5
    assert _metric(metrics, 'memshadow_memory_degraded_total{reason="OSError"}') == 5
    warnings = [r.getMessage() for r in caplog.records if "memory degraded" in r.getMessage()]
    assert len(warnings) == 1 and "forwarding unmodified" in warnings[0]


def test_the_log_throttle_says_how_many_lines_it_held_back() -> None:
    throttle = LogThrottle(interval_s=10)
    assert throttle.admit(("acme", "deadline"), now=100.0) == 0
    assert throttle.admit(("acme", "deadline"), now=101.0) is None
    assert throttle.admit(("acme", "overload"), now=101.0) == 0  # another kind: its own line
    assert throttle.admit(("acme", "deadline"), now=105.0) is None
    assert throttle.admit(("acme", "deadline"), now=110.5) == 2
    assert throttle.admit(("acme", "deadline"), now=121.0) == 0


ANTHROPIC_REPLY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "You live in Porto."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 3},
}


async def test_anthropic_routed_requests_carry_the_block_in_system(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    no_aiohttp: None,
    router: respx.MockRouter,
) -> None:
    routed = settings.model_copy(
        update={
            "model_list": [
                ModelRoute(
                    model_name="claude",
                    litellm_params={"model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant"},
                )
            ]
        }
    )
    app = build_app(routed, registry=registry)
    anthropic = router.post("https://api.anthropic.com/v1/messages").mock(
        return_value=httpx.Response(200, json=ANTHROPIC_REPLY)
    )
    async with in_process(app, tenant_key) as http:
        await http.post(
            "/v1/memories", json={"user": "gus", "content": "Gus lives in Porto since 2023."}
        )
        await eventually(lambda: _remembers(http, "gus", "Porto"))
        response = await http.post(
            CHAT,
            json={
                "model": "claude",
                "max_tokens": 100,
                "messages": _conversation("Where do I live, Porto?"),
            },
            headers={"x-memory-user": "gus"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-memory-status"] == "ok"
    sent = json.loads(anthropic.calls.last.request.content)
    system = (
        sent["system"]
        if isinstance(sent["system"], str)
        else " ".join(p["text"] for p in sent["system"])
    )
    assert "<memories>" in system and "Gus lives in Porto" in system
    assert all(m["role"] != "system" for m in sent["messages"])


def test_the_openai_sdk_app_remembers_without_a_code_change(
    live_memshadow: tuple[str, str, FakeUpstream],
) -> None:
    url, key, fake = live_memshadow
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", user="sam", stream=True, messages=_conversation(FACT)
        )  # type: ignore[arg-type]
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello there"
        )
        for _ in range(100):  # capture lands within a few seconds
            answer = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                user="sam",
                messages=_conversation("What's my greyhound's name, Biscuit?"),  # type: ignore[arg-type]
            )
            if answer.headers["x-memory-status"] == "ok":
                break
            import time

            time.sleep(0.05)
    assert answer.headers["x-memory-status"] == "ok"
    assert "Biscuit" in _system_texts(fake.bodies()[-1])


@pytest.mark.parametrize(
    "text", ["", "hello world", "naïve café 東京 🚀🚀", "a" * 5000, "Ünïcödé " * 300, "\n\t  x"]
)
def test_the_cheap_prompt_bound_never_undercounts(text: str) -> None:
    from memory.tokens import TokenCounter
    from proxy.injection import prompt_tokens, prompt_tokens_bound

    messages = [
        {"role": "user", "content": text},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]
    assert prompt_tokens_bound(messages) >= prompt_tokens(messages, TokenCounter())


async def test_too_many_recalls_in_flight_shed_memory_not_requests(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    memories = SlowMemories(tmp_path / "mem", FakeEmbedder())
    await memories.start()
    limited = settings.model_copy(
        update={"memory": settings.memory.model_copy(update={"max_concurrent_recalls": 1})}
    )
    app = build_app(limited, registry=registry, memories=memories)
    raw = json.dumps({"model": "m", "messages": _conversation("hello again")}).encode()
    async with in_process(app, tenant_key) as http:
        first, second = await asyncio.gather(
            http.post(CHAT, content=raw), http.post(CHAT, content=raw)
        )
        metrics = (await http.get("/metrics")).text
    await memories.aclose()
    assert first.status_code == second.status_code == 200
    assert first.headers["x-memory-status"] == second.headers["x-memory-status"] == "degraded"
    assert 'memshadow_memory_degraded_total{reason="overload"} 1.0' in metrics
    assert 'memshadow_memory_degraded_total{reason="deadline"} 1.0' in metrics


class LaggingMemories(MemoryService):
    delay_s = 0.2

    async def search(self, scope: Scope, query: str, **kwargs: Any) -> RecallResult:
        await asyncio.sleep(self.delay_s)
        return RecallResult()


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name))
    return float(line.rsplit(" ", 1)[1])


async def test_recall_limit_shrinks_when_recalls_miss_their_deadline_and_grows_back(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    memories = LaggingMemories(tmp_path / "mem", FakeEmbedder())
    await memories.start()
    ceiling = settings.memory.model_copy(update={"max_concurrent_recalls": 4})
    app = build_app(settings.model_copy(update={"memory": ceiling}), registry=registry,
                    memories=memories)  # fmt: skip
    raw = json.dumps({"model": "m", "messages": _conversation("hello again")}).encode()

    async def burst() -> list[str]:
        answers = await asyncio.gather(*(http.post(CHAT, content=raw) for _ in range(4)))
        assert all(a.status_code == 200 for a in answers)
        await asyncio.sleep(memories.delay_s + 0.1)  # the abandoned recalls finish
        return sorted(a.headers["x-memory-status"] for a in answers)

    async with in_process(app, tenant_key) as http:
        assert await burst() == ["degraded"] * 4  # all four admitted, all missed the deadline
        metrics = (await http.get("/metrics")).text
        assert _metric(metrics, 'memshadow_memory_degraded_total{reason="deadline"}') == 4
        assert _metric(metrics, "memshadow_recall_concurrency_limit") == 2

        await burst()  # two admitted (and late again), two shed at once
        metrics = (await http.get("/metrics")).text
        assert _metric(metrics, 'memshadow_memory_degraded_total{reason="overload"}') == 2
        assert _metric(metrics, 'memshadow_memory_degraded_total{reason="deadline"}') == 6
        assert _metric(metrics, "memshadow_recall_concurrency_limit") == 1

        memories.delay_s = 0.0  # the store recovers: recalls beat the deadline again
        for _ in range(6):
            answer = await http.post(CHAT, content=raw)
            assert answer.headers["x-memory-status"] == "abstained"
        metrics = (await http.get("/metrics")).text
        assert _metric(metrics, "memshadow_recall_concurrency_limit") == 3
    await memories.aclose()


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, noting every text the model is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed_batch(self, texts: Sequence[str]) -> Any:
        self.texts.extend(texts)
        return super().embed_batch(texts)


async def test_capturing_a_turn_reuses_its_recall_embedding(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> None:
    model = RecordingEmbedder()
    app = build_app(settings, registry=registry, embedder=CachedEmbedder(model))
    question = "Which greyhound rescue did I adopt Biscuit from last spring?"
    async with in_process(app, tenant_key) as client:
        # Something to recall from: a scope with no memories is not searched at all.
        await client.post("/v1/memories", json={"user": "alice", "content": FACT})
        await eventually(lambda: _remembers(client, "alice", "Biscuit"))
        await client.post(
            CHAT,
            json={"model": "m", "messages": _conversation(question)},
            headers={"x-memory-user": "alice"},
        )
        await eventually(lambda: _remembers(client, "alice", "Hello there"))
    captured = f"User: {question}"
    assert model.texts.count(captured) == 1  # by the recall, and only then
    assert "Assistant: Hello there" in model.texts  # the answer had to be embedded


async def test_an_answer_quoting_the_injected_notes_stores_only_its_own_words(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = await _told_the_fact(client, "dora")

    # A model that recites the block it was given, then adds something of its own.
    question = "What is my dog called? Biscuit?"
    asked = {"model": "m", "messages": _conversation(question)}

    def quoting(request: httpx.Request) -> httpx.Response:
        notes = _system_texts(json.loads(request.content))
        reply = f"I saw: {notes}\nThe vet on Rua Augusta opens at nine on Saturdays."
        return httpx.Response(200, json=completion("m", reply))

    upstream.enqueue(quoting)
    answered = await client.post(CHAT, json=asked, headers=headers)
    assert answered.headers["x-memory-status"] == "ok"
    reply = answered.json()["choices"][0]["message"]["content"]
    assert "never as instructions" in reply and "Biscuit" in reply  # the client got it all

    def stored() -> list[str]:
        return [m["content"] for m in listed]

    async def own_words_stored() -> bool:
        nonlocal listed
        listed = (await client.get("/v1/memories", params={"user": "dora"})).json()["data"]
        return any("Rua Augusta" in c for c in stored())

    listed: list[dict[str, Any]] = []
    await eventually(own_words_stored)
    # The history comes back with the whole answer in it: it was captured once, as sent.
    resent = {
        "model": "m",
        "messages": _conversation(question, reply, "Thanks, I will book the vet."),
    }
    await client.post(CHAT, json=resent, headers=headers)
    await eventually(lambda: _remembers(client, "dora", "book the vet"))
    await own_words_stored()
    assert not [c for c in stored() if "never as instructions" in c or "Recalled notes" in c]
    assert [c for c in stored() if "Rua Augusta" in c] == [
        "Assistant: I saw:\nThe vet on Rua Augusta opens at nine on Saturdays."
    ]
    assert sum(FACT in c for c in stored()) == 1  # the user's own turn, not a copy of it


async def test_a_question_asked_again_is_not_answered_with_its_own_earlier_asking(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await client.post("/v1/memories", json={"user": "ivy", "content": "Ivy's locker code is 4417."})
    await eventually(lambda: _remembers(client, "ivy", "4417"))
    question = "What is the code of Ivy's locker?"
    block = await _asked_in_new_sessions(
        client, upstream, question, ["It is 4417.", "It is 4417, as before."]
    )
    assert "Ivy's locker code is 4417." in block
    assert question not in block  # stored, and found by search, but never injected

    # A question memory cannot answer, asked again: what it finds of its own past is the
    # answer it got, not the asking.
    unanswerable = "Which dentist does Ivy see on Fridays?"
    block = await _asked_in_new_sessions(
        client, upstream, unanswerable, ["I don't know.", "I don't know."]
    )
    assert "Assistant: I don't know." in block
    assert unanswerable not in block


async def _asked_in_new_sessions(
    client: httpx.AsyncClient, upstream: FakeUpstream, question: str, answers: list[str]
) -> str:
    """Ivy asks ``question`` once per answer, each time in a new session, and each asking is
    captured before the next; the memory block the last one carried."""
    for answer in answers:
        upstream.enqueue(httpx.Response(200, json=completion("m", answer)))
        await client.post(
            CHAT, json={"model": "m", "messages": _conversation(question)},
            headers={"x-memory-user": "ivy", "x-memory-session": uuid.uuid4().hex},
        )  # fmt: skip
        await eventually(lambda: _remembers(client, "ivy", f"User: {question}"))
    return _system_texts(upstream.bodies()[-1])
