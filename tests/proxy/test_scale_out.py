"""Two replicas behind one load balancer: one shared LanceDB store, one real Redis.

Each replica is a whole app (``create_app``) with its own data dir (write-ahead log), run
in-process through its public HTTP surface; the upstream is the respx fake. The scope
indexes' fallback version check is set far out (60 s) unless a test is about it, so what
passes here within seconds passed through Redis.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from proxy.keys import TenantRegistry
from tests.conftest import ADMIN_KEY, UPSTREAM, RedisServer, build_app, in_process
from tests.fakes import FakeUpstream, completion, response_object
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")
CHAT = "/v1/chat/completions"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Fleet:
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    key_id: str


def replica_settings(
    root: Path, name: str, redis_url: str | None, refresh_s: float = 60.0
) -> Settings:
    return Settings(
        upstream_base_url=UPSTREAM,
        upstream_api_key="sk-upstream",
        data_dir=root / name,
        store_uri=str(root / "store"),
        redis_url=redis_url,
        admin_key=ADMIN_KEY,
        store_refresh_s=refresh_s,
        # Loading a scope on a loaded test machine may take longer than the default 60 ms.
        memory={"policy": {"recall_deadline_ms": 5000}},
    )


@pytest.fixture
async def fleet(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Fleet]:
    registry = TenantRegistry(str(tmp_path / "store" / "registry"))
    key, record = registry.create_key("acme")
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                in_process(build_app(replica_settings(tmp_path, name, redis_server.url)), key)
            )
            for name in ("a", "b")
        ]
        for client in clients:  # both subscribed before anything happens
            await eventually(lambda c=client: _healthy(c), seconds=5)
        yield Fleet(clients[0], clients[1], record.id)


async def _healthy(client: httpx.AsyncClient) -> bool:
    metrics = (await client.get("/metrics")).text
    return "memshadow_shared_state_up 1.0" in metrics


async def _found(client: httpx.AsyncClient, query: str, content: str, user: str = "ann") -> bool:
    response = await client.post("/v1/memories/search", json={"query": query, "user": user})
    assert response.status_code == 200, response.text
    return any(item["content"] == content for item in response.json()["data"])


async def _store(client: httpx.AsyncClient, content: str, user: str = "ann") -> str:
    response = await client.post("/v1/memories", json={"user": user, "content": content})
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["data"][0]["id"]
    return memory_id


def _ask(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    text: str,
    completion_id: str,
    mode: str = "read",
    history: list[dict[str, str]] | None = None,
    *,
    session: str = "s1",
    answer: str = "Okay.",
) -> Awaitable[httpx.Response]:
    upstream.enqueue(httpx.Response(200, json={**completion("m", answer), "id": completion_id}))
    messages = [*(history or []), {"role": "user", "content": text}]
    return client.post(
        CHAT,
        json={"model": "m", "messages": messages},
        headers={"x-memory-user": "ann", "x-memory-session": session, "x-memory-mode": mode},
    )


TEA = "Ann drinks green tea every morning."
TEA_QUERY = "What tea does Ann drink in the morning?"


async def test_a_memory_stored_via_a_is_found_via_b_within_seconds(fleet: Fleet) -> None:
    await _store(fleet.b, "Ann's bike is red and old.")
    await eventually(lambda: _found(fleet.b, "bike", "Ann's bike is red and old."))  # B caches
    await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.b, TEA_QUERY, TEA), seconds=5)


@pytest.mark.parametrize("forget", ["one", "user", "session"])
async def test_a_memory_forgotten_via_a_is_gone_from_b_at_once(fleet: Fleet, forget: str) -> None:
    response = await fleet.a.post(
        "/v1/memories", json={"user": "ann", "session": "s1", "content": TEA}
    )
    memory_id = response.json()["data"][0]["id"]
    await eventually(lambda: _found(fleet.b, TEA_QUERY, TEA), seconds=5)
    path = {
        "one": f"/v1/memories/{memory_id}",
        "user": "/v1/memories?user=ann",
        "session": "/v1/memories?user=ann&session=s1",
    }[forget]
    assert (await fleet.a.delete(path)).status_code == 200
    assert not await _found(fleet.b, TEA_QUERY, TEA)


async def _injected(client: httpx.AsyncClient, completion_id: str) -> list[str]:
    response = await client.get(f"/v1/receipts/{completion_id}")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["memories"]]


async def test_a_completion_served_by_a_is_credited_once_through_either(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    tea = await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.a, TEA_QUERY, TEA))
    answer = await _ask(fleet.a, upstream, TEA_QUERY, "cmpl-a1")
    assert answer.headers["x-memory-status"] == "ok"
    await eventually(lambda: _has(fleet.b, "cmpl-a1", tea), seconds=2)

    via_b = await fleet.b.post("/v1/feedback", json={"completion_id": "cmpl-a1", "useful": True})
    assert via_b.status_code == 200 and tea in via_b.json()["credited"]
    via_a = await fleet.a.post("/v1/feedback", json={"completion_id": "cmpl-a1", "useful": True})
    assert via_a.json()["credited"] == [] and tea in via_a.json()["already_recorded"]
    memory = (await fleet.b.get(f"/v1/memories/{tea}")).json()
    assert memory["useful"] == pytest.approx(1.0)
    receipt = (await fleet.a.get("/v1/receipts/cmpl-a1")).json()
    assert receipt["credited"][tea] == pytest.approx(1.0)


async def _has(client: httpx.AsyncClient, completion_id: str, memory_id: str) -> bool:
    return memory_id in await _injected(client, completion_id)


async def test_calibration_outcomes_from_both_replicas_add_up(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.a, TEA_QUERY, TEA))
    await eventually(lambda: _found(fleet.b, TEA_QUERY, TEA), seconds=5)
    rounds = (
        (fleet.a, fleet.b, "c-1", TEA_QUERY),
        # Another question: "not useful" turns the memory down for the question it was given.
        (fleet.b, fleet.a, "c-2", "Which tea does Ann drink every morning?"),
    )
    for served, other, completion_id, question in rounds:
        # One session each: the same question twice in one session would be a regenerate.
        answer = await _ask(served, upstream, question, completion_id, session=completion_id)
        assert answer.headers["x-memory-status"] == "ok"
        await eventually(lambda o=other, c=completion_id: _any_receipt(o, c), seconds=2)
        feedback = await other.post(
            "/v1/feedback", json={"completion_id": completion_id, "useful": False}
        )
        assert feedback.status_code == 200
    for client in (fleet.a, fleet.b):
        calibration = (await client.get("/v1/calibration")).json()
        assert calibration["outcomes"] == pytest.approx(2.0)


async def test_a_memory_turned_down_for_a_question_via_a_is_not_injected_for_it_by_b(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    tea = await _store(fleet.a, TEA)
    cups = await _store(fleet.a, "Ann bought new tea cups at the morning market.")
    await eventually(lambda: _found(fleet.b, TEA_QUERY, TEA), seconds=5)
    first = await _ask(fleet.a, upstream, TEA_QUERY, "q-1", session="q1")
    assert first.headers["x-memory-status"] == "ok"
    assert {tea, cups} <= set(await _injected(fleet.a, "q-1"))
    verdict = await fleet.a.post(
        "/v1/feedback", json={"completion_id": "q-1", "useful": False, "memory_ids": [cups]}
    )
    assert verdict.status_code == 200

    async def turned_down_on_b() -> bool:
        n = next(counter)
        answer = await _ask(fleet.b, upstream, TEA_QUERY, f"q-b{n}", session=f"qb{n}")
        assert answer.headers["x-memory-status"] == "ok"
        injected = await _injected(fleet.b, f"q-b{n}")
        assert tea in injected
        return cups not in injected

    counter = itertools.count()
    # Without the outcome feed, B (which never saw the feedback) injects the cups every time.
    await eventually(turned_down_on_b, seconds=3)


async def test_a_regenerate_on_b_counts_against_what_a_injected(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    tea = await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.a, TEA_QUERY, TEA))
    await eventually(lambda: _found(fleet.b, TEA_QUERY, TEA), seconds=5)
    first = await _ask(fleet.a, upstream, TEA_QUERY, "g-1", mode="on", answer="Green tea.")
    assert first.headers["x-memory-status"] == "ok"

    async def first_turn_recorded() -> bool:
        # A's worker records the turn, then captures the exchange: once the capture is
        # listed, the turn is recorded.
        listed = (await fleet.b.get("/v1/memories", params={"user": "ann"})).json()["data"]
        return any(m["content"].endswith("Green tea.") for m in listed)

    await eventually(first_turn_recorded, seconds=5)
    await _ask(fleet.b, upstream, TEA_QUERY, "g-2")  # the same question again: a regenerate

    async def discredited() -> bool:
        return float((await fleet.a.get(f"/v1/memories/{tea}")).json()["not_useful"]) > 0

    await eventually(discredited, seconds=5)


async def _any_receipt(client: httpx.AsyncClient, completion_id: str) -> bool:
    return (await client.get(f"/v1/receipts/{completion_id}")).status_code == 200


async def test_history_resent_to_b_is_not_captured_twice(
    fleet: Fleet, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memshadow.events")
    first = "I am planning a trip to Lisbon in May."
    await _ask(fleet.a, upstream, first, "cap-1", mode="write", answer="Lovely, in May.")
    await eventually(lambda: _stored_counts(caplog, 1), seconds=5)
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Lovely, in May."},
    ]
    await _ask(
        fleet.b, upstream, "Which museums open late?", "cap-2", "write", history, answer="Two."
    )
    await eventually(lambda: _stored_counts(caplog, 2), seconds=5)
    # A stored the first turn and its answer; B only the new turn and its answer. Without
    # the shared ledger B would have stored (reinforced) all four.
    assert [len(r["memory_ids"]) for r in _stored(caplog)] == [2, 2]
    listed = (await fleet.b.get("/v1/memories", params={"user": "ann"})).json()["data"]
    assert sorted(m["reinforced"] for m in listed) == [0, 0, 0, 0]


def _stored(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.__dict__
        for r in caplog.records
        if r.name == "memshadow.events" and getattr(r, "event", "") == "memory.stored"
    ]


async def _stored_counts(caplog: pytest.LogCaptureFixture, count: int) -> bool:
    return len(_stored(caplog)) >= count


async def test_a_key_revoked_on_a_is_refused_by_b_promptly(fleet: Fleet) -> None:
    assert (await fleet.b.get("/v1/memories")).status_code == 200  # B has the key cached
    revoked = await fleet.a.delete(f"/admin/keys/{fleet.key_id}", headers=ADMIN)
    assert revoked.status_code == 200

    async def refused() -> bool:
        return (await fleet.b.get("/v1/memories")).status_code == 401

    await eventually(refused, seconds=1)  # the key cache lives 30 s: this is the broadcast


async def test_redis_down_never_fails_chat_and_memory_recovers(
    fleet: Fleet, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.a, TEA_QUERY, TEA))
    assert (await _ask(fleet.a, upstream, TEA_QUERY, "r-1")).headers["x-memory-status"] == "ok"

    redis_server.stop()
    await eventually(lambda: _down(fleet.a), seconds=5)
    for client, completion_id in ((fleet.a, "r-2"), (fleet.b, "r-3")):
        answer = await _ask(client, upstream, TEA_QUERY, completion_id)
        assert answer.status_code == 200 and answer.headers["x-memory-status"] == "degraded"
        assert answer.headers["x-memory-injected"] == "0"
    stream = await fleet.b.post(
        CHAT,
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert stream.status_code == 200 and stream.headers["x-memory-status"] == "degraded"
    assert await _found(fleet.a, TEA_QUERY, TEA)  # the memory API keeps working
    metrics = (await fleet.a.get("/metrics")).text
    assert 'memshadow_memory_degraded_total{reason="shared_state"} 1.0' in metrics

    redis_server.start()
    for client in (fleet.a, fleet.b):
        await eventually(lambda c=client: _healthy(c), seconds=10)
    answer = await _ask(fleet.b, upstream, TEA_QUERY, "r-4")
    assert answer.headers["x-memory-status"] == "ok" and answer.headers["x-memory-injected"] == "1"


async def _down(client: httpx.AsyncClient) -> bool:
    return not await _healthy(client)


async def test_a_change_nobody_announced_reaches_b_through_the_version_check(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A writer without Redis (its announcements never arrive): B's cached scope heals."""
    registry = TenantRegistry(str(tmp_path / "store" / "registry"))
    key, _ = registry.create_key("acme")
    b_app = build_app(replica_settings(tmp_path, "b", redis_server.url, refresh_s=0.5))
    silent_app = build_app(replica_settings(tmp_path, "silent", None))
    async with in_process(b_app, key) as b, in_process(silent_app, key) as silent:
        await _store(b, "Ann's bike is red and old.")
        await eventually(lambda: _found(b, "bike", "Ann's bike is red and old."))
        tea = await _store(silent, TEA)
        await eventually(lambda: _found(b, TEA_QUERY, TEA), seconds=5)
        assert (await silent.delete(f"/v1/memories/{tea}")).status_code == 200
        await eventually(lambda: _gone(b, TEA_QUERY, TEA), seconds=5)


async def _gone(client: httpx.AsyncClient, query: str, content: str) -> bool:
    return not await _found(client, query, content)


RESPONSES = "/v1/responses"


async def test_a_background_response_started_on_a_is_captured_once_when_b_polls_it(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    tea = await _store(fleet.a, TEA)
    await eventually(lambda: _found(fleet.a, TEA_QUERY, TEA))
    queued = {**response_object("m", "", id="resp_bg"), "status": "queued", "output": []}
    upstream.enqueue(httpx.Response(200, json=queued))
    ask = {"model": "m", "input": TEA_QUERY, "background": True, "user": "ann"}
    started = await fleet.a.post(RESPONSES, json=ask)
    assert started.headers["x-memory-status"] == "ok"
    await eventually(lambda: _found(fleet.a, "tea", f"User: {TEA_QUERY}"), seconds=5)

    report = "Every morning you drink green tea, as you told me."
    done = response_object("m", report, id="resp_bg")
    for body in ({**queued, "status": "in_progress"}, done, done):  # every poll through B
        upstream.enqueue(httpx.Response(200, json=body))
        assert (await fleet.b.get("/v1/responses/resp_bg")).json()["status"] == body["status"]
    answer = f"Assistant: {report}"
    await eventually(lambda: _found(fleet.b, "green tea every morning", answer), seconds=5)
    listed = (await fleet.a.get("/v1/memories", params={"user": "ann"})).json()["data"]
    assert [m["content"] for m in listed].count(answer) == 1  # two polls found it done: once

    async def credited() -> bool:  # B read what A injected back from the receipt and store
        memory = (await fleet.a.get(f"/v1/memories/{tea}")).json()
        return bool(memory["useful"] > 0)

    await eventually(credited, seconds=5)


async def test_a_follow_up_on_b_is_recalled_with_what_it_continues_on_a(
    fleet: Fleet, upstream: FakeUpstream
) -> None:
    fact = "Maya, my sister, is a marine biologist in Lisbon."
    await _store(fleet.a, fact)
    await eventually(lambda: _found(fleet.a, "marine biologist", fact))
    first = {"model": "m", "input": "Tell me about my sister Maya.", "user": "ann"}
    upstream.enqueue(httpx.Response(200, json=response_object("m", "She is Maya.", id="resp_1")))
    await fleet.a.post(RESPONSES, json=first)
    await eventually(lambda: _found(fleet.a, "sister Maya", "Assistant: She is Maya."), seconds=5)

    # On its own, "What about her?" finds nothing; B recalls with what A's exchange said.
    follow_up = {"model": "m", "input": "What about her?", "user": "ann"}
    alone = await fleet.b.post(RESPONSES, json={**follow_up, "previous_response_id": "resp_x"})
    assert alone.headers["x-memory-status"] == "abstained"
    chained = await fleet.b.post(RESPONSES, json={**follow_up, "previous_response_id": "resp_1"})
    assert chained.headers["x-memory-status"] == "ok"
    assert "marine biologist" in upstream.bodies()[-1]["instructions"]
