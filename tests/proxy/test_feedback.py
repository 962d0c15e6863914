"""Outcomes: explicit feedback, implicit signals, abstention and calibration."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from proxy.keys import TenantRegistry
from tests.fakes import FakeUpstream, completion
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")
CHAT = "/v1/chat/completions"


async def _store(client: httpx.AsyncClient, user: str, *contents: str) -> list[str]:
    response = await client.post(
        "/v1/memories", json={"user": user, "items": [{"content": c} for c in contents]}
    )
    ids = [m["id"] for m in response.json()["data"]]
    await eventually(lambda: _searchable(client, user, contents[-1]))
    return ids


async def _searchable(client: httpx.AsyncClient, user: str, content: str) -> bool:
    found = (
        await client.post("/v1/memories/search", json={"query": content, "user": user})
    ).json()["data"]
    return any(item["content"] == content for item in found)


async def _ask(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    user: str,
    text: str,
    completion_id: str,
    session: str = "s1",
    answer: str = "Okay.",
) -> httpx.Response:
    upstream.enqueue(httpx.Response(200, json={**completion("m", answer), "id": completion_id}))
    return await client.post(
        CHAT,
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        headers={"x-memory-user": user, "x-memory-session": session, "x-memory-mode": "read"},
    )


async def _memory(client: httpx.AsyncClient, memory_id: str) -> dict[str, Any]:
    memory: dict[str, Any] = (await client.get(f"/v1/memories/{memory_id}")).json()
    return memory


async def test_feedback_credits_exactly_the_injected_memories_once(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    [tea, _] = await _store(
        client, "ann", "Ann drinks green tea every morning.", "Ann's bike is red and old."
    )
    response = await _ask(
        client, upstream, "ann", "What tea does Ann drink in the morning?", "cmpl-1"
    )
    assert response.headers["x-memory-status"] == "ok"
    receipt = (await client.get("/v1/receipts/cmpl-1")).json()
    injected = [m["id"] for m in receipt["memories"]]
    assert tea in injected

    first = await client.post("/v1/feedback", json={"completion_id": "cmpl-1", "useful": True})
    assert first.status_code == 200 and sorted(first.json()["credited"]) == sorted(injected)
    again = await client.post("/v1/feedback", json={"completion_id": "cmpl-1", "useful": True})
    assert again.json()["credited"] == [] and sorted(again.json()["already_recorded"]) == sorted(
        injected
    )
    assert (await _memory(client, tea))["useful"] == pytest.approx(1.0)

    foreign = await client.post(
        "/v1/feedback",
        json={"completion_id": "cmpl-1", "score": 0.5, "memory_ids": ["not-injected"]},
    )
    assert foreign.status_code == 400 and foreign.json()["error"]["param"] == "memory_ids"
    both = await client.post(
        "/v1/feedback", json={"completion_id": "cmpl-1", "useful": True, "score": 1}
    )
    assert both.status_code == 400


async def test_feedback_for_another_tenants_completion_is_404(
    client: httpx.AsyncClient, upstream: FakeUpstream, registry: TenantRegistry
) -> None:
    await _store(client, "ann", "Ann drinks green tea every morning.")
    await _ask(client, upstream, "ann", "What tea does Ann drink?", "cmpl-private")
    other_key, _ = registry.create_key("globex")
    response = await client.post(
        "/v1/feedback",
        json={"completion_id": "cmpl-private", "useful": False},
        headers={"authorization": f"Bearer {other_key}"},
    )
    assert response.status_code == 404


async def test_negative_feedback_changes_the_next_recall_order(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    [wrong, right] = await _store(
        client,
        "bo",
        "Bo's favourite pizza topping is pineapple.",
        "Bo's favourite pizza topping is mushroom.",
    )
    query = "What is Bo's favourite pizza topping?"
    before = (await client.post("/v1/memories/search", json={"query": query, "user": "bo"})).json()[
        "data"
    ]
    loser = before[0]["id"]
    for n in range(4):
        await _ask(client, upstream, "bo", query, f"cmpl-bo-{n}", session=f"s{n}")
        await client.post(
            "/v1/feedback",
            json={"completion_id": f"cmpl-bo-{n}", "memory_ids": [loser], "useful": False},
        )
    after = (await client.post("/v1/memories/search", json={"query": query, "user": "bo"})).json()[
        "data"
    ]
    assert {wrong, right} == {loser, after[0]["id"]} and after[0]["id"] != loser


async def test_off_topic_questions_abstain(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await _store(client, "cy", "Cy keeps bees on the roof of the garage.")
    response = await _ask(client, upstream, "cy", "How do quasars emit x-rays?", "cmpl-cy")
    assert response.headers["x-memory-status"] == "abstained"
    assert response.headers["x-memory-injected"] == "0"
    assert float(response.headers["x-memory-confidence"]) < 0.2
    assert all(m["role"] == "user" for m in upstream.bodies()[-1]["messages"])
    receipt = (await client.get("/v1/receipts/cmpl-cy")).json()
    assert receipt["status"] == "abstained" and receipt["memories"] == []


async def test_a_question_pairing_a_person_with_someone_elses_fact_abstains(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    # A transcript of two people: the race and what it taught are Melanie's, not Caroline's.
    await _store(
        client,
        "pair",
        "Melanie: After the charity race last Saturday I realised self-care really matters.",
        "Caroline: I went to the pottery class with my cousin.",
        "Melanie: My kids love the beach in summer.",
        "Caroline: The library downtown has a new reading room.",
        "Caroline: I painted a sunrise over the lake this morning.",
    )
    right = await _ask(
        client, upstream, "pair", "What did Melanie realise after the charity race?", "cmpl-m"
    )
    assert right.headers["x-memory-status"] == "ok"
    wrong = await _ask(
        client, upstream, "pair", "What did Caroline realise after the charity race?", "cmpl-c"
    )
    assert wrong.headers["x-memory-status"] == "abstained"
    assert float(wrong.headers["x-memory-confidence"]) < 0.2
    assert float(right.headers["x-memory-confidence"]) > 0.5


@pytest.mark.parametrize(
    ("second_turn", "kind"),
    [("Where does Di live now?", "regenerate"), ("No, that's wrong, I moved since.", "correction")],
)
async def test_regenerates_and_corrections_count_against_the_injection(
    client: httpx.AsyncClient, upstream: FakeUpstream, second_turn: str, kind: str
) -> None:
    [fact] = await _store(client, "di", "Di lives in Lyon near the river.")
    first = await _ask(
        client, upstream, "di", "Where does Di live now?", "cmpl-di-1", answer="Somewhere."
    )
    assert first.headers["x-memory-status"] == "ok"
    await _ask(client, upstream, "di", second_turn, "cmpl-di-2", answer="Sorry.")
    await eventually(lambda: _has_negative(client, fact))
    metrics = (await client.get("/metrics")).text
    assert f'memshadow_feedback_total{{kind="{kind}"}}' in metrics


async def _has_negative(client: httpx.AsyncClient, memory_id: str) -> bool:
    return bool((await _memory(client, memory_id))["not_useful"] > 0)


async def test_an_answer_that_uses_a_memory_counts_for_it(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    [fact] = await _store(client, "ed", "Ed's daughter Marigold plays violin in Toulouse.")
    response = await _ask(
        client,
        upstream,
        "ed",
        "What does Ed's daughter Marigold play?",
        "cmpl-ed",
        answer="Marigold plays violin in Toulouse.",
    )
    assert response.headers["x-memory-status"] == "ok", dict(response.headers)

    async def credited() -> bool:
        return bool((await _memory(client, fact))["useful"] > 0)

    await eventually(credited)


async def test_calibration_is_visible(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    await _store(client, "fi", "Fi's passport expires in June 2031.")
    for n in range(3):
        await _ask(
            client,
            upstream,
            "fi",
            "When does Fi's passport expire, June?",
            f"cmpl-fi-{n}",
            session=f"x{n}",
        )
        await client.post("/v1/feedback", json={"completion_id": f"cmpl-fi-{n}", "useful": n != 0})
    await asyncio.sleep(0)
    body = (await client.get("/v1/calibration")).json()
    assert body["outcomes"] == pytest.approx(3)
    assert sum(b["count"] for b in body["bins"]) == pytest.approx(3)
    assert 0 <= body["expected_calibration_error"] <= 1
    metrics = (await client.get("/metrics")).text
    assert 'memshadow_calibration_error{tenant="acme"}' in metrics
    assert 'memshadow_confidence_threshold{tenant="acme"}' in metrics


async def test_useful_injections_never_lower_the_threshold_below_the_policy(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await _store(client, "gi", "Gi's bike lock code is 9182.")
    for n in range(30):  # enough outcomes for the threshold to adapt
        cid = f"cmpl-gi-{n}"
        response = await _ask(client, upstream, "gi", "What is Gi's bike lock code?", cid, f"g{n}")
        assert response.headers["x-memory-status"] == "ok"
        await client.post("/v1/feedback", json={"completion_id": cid, "useful": True})
    body = (await client.get("/v1/calibration")).json()
    assert body["outcomes"] == pytest.approx(30)
    # Every injection helped, so any edge meets the target precision; the configured 0.2
    # still stands, or the tenant would inject at any confidence at all.
    assert body["threshold"] == pytest.approx(0.2)
