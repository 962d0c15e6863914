"""Feedback makes the injected set smaller and more precise, through the HTTP surface."""

from __future__ import annotations

import httpx
import pytest

from config.settings import Settings
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.fakes import FakeUpstream
from tests.proxy.test_feedback import _ask, _memory, _store

pytestmark = pytest.mark.usefixtures("upstream")

QUESTION = "What is the code of Gus's gym locker?"


async def _injected(client: httpx.AsyncClient, completion_id: str) -> list[str]:
    receipt = (await client.get(f"/v1/receipts/{completion_id}")).json()
    return [m["id"] for m in receipt["memories"]]


async def _feedback(client: httpx.AsyncClient, completion_id: str, good: list[str]) -> None:
    """Per-memory feedback: these injected memories helped, the other injected ones did not."""
    injected = await _injected(client, completion_id)
    useless = [m for m in injected if m not in good]
    for useful, ids in ((True, [m for m in injected if m in good]), (False, useless)):
        if ids:
            await client.post(
                "/v1/feedback",
                json={"completion_id": completion_id, "useful": useful, "memory_ids": ids},
            )


async def test_a_question_stops_getting_the_memories_its_feedback_turned_down(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    [code, *noise] = await _store(
        client,
        "gus",
        "The code of Gus's gym locker is 3141.",
        "Gus's gym locker room was repainted blue.",
        "Gus lost the key of his bike locker at the gym.",
        "The gym where Gus trains opens at six.",
    )
    rounds: list[list[str]] = []
    for n in range(3):
        response = await _ask(client, upstream, "gus", QUESTION, f"cmpl-gus-{n}", session=f"g{n}")
        assert response.headers["x-memory-status"] == "ok"
        rounds.append(await _injected(client, f"cmpl-gus-{n}"))
        await _feedback(client, f"cmpl-gus-{n}", [code])
    assert code in rounds[0] and len(rounds[0]) > 1  # the noise was injected at first
    # One "not useful" for this question, and the noise is not injected for it again; the fact
    # that helped every time stays.
    assert rounds[1] == rounds[2] == [code]
    # Turned down, not deleted: still readable through the API, one failure on its counts.
    assert (await _memory(client, noise[0]))["not_useful"] == 1


async def test_feedback_on_one_question_leaves_other_questions_their_memories(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    [code, paint, *_] = await _store(
        client,
        "ivy",
        "The code of Ivy's gym locker is 1618.",
        "Ivy's gym locker room was repainted blue last week.",
        "Ivy lost the key of her bike locker at the gym.",
        "The gym where Ivy trains opens at six.",
    )
    locker = "What is the code of Ivy's gym locker?"
    for n in range(3):
        await _ask(client, upstream, "ivy", locker, f"cmpl-ivy-{n}", session=f"i{n}")
        await _feedback(client, f"cmpl-ivy-{n}", [code])
    assert await _injected(client, "cmpl-ivy-2") == [code]
    # The repainting was noise for the code, and it is what this question asks about.
    room = "When was Ivy's gym locker room repainted?"
    response = await _ask(client, upstream, "ivy", room, "cmpl-ivy-room", session="r")
    assert response.headers["x-memory-status"] == "ok"
    assert paint in await _injected(client, "cmpl-ivy-room")


async def test_failures_on_other_questions_never_take_a_memory_away(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    # Injected as the best match for seven questions it did not answer; then asked for. Its
    # pooled counts sink it in the ranking; nothing drops it. (Searched, not chatted: after so
    # many failures the tenant's calibration rightly abstains at this confidence.)
    [code, *_] = await _store(
        client,
        "hal",
        "The code of Hal's gym locker is 2718.",
        "Hal's cat is called Pixel.",
        "Hal flew to Oslo in March.",
    )
    for n, other in enumerate(["gym", "gym locker", "locker room", "gym code", "Hal's code",
                               "gym hours", "locker key"]):  # fmt: skip
        await _ask(client, upstream, "hal", f"What about Hal's {other}?", f"cmpl-hal-{n}", f"h{n}")
        await client.post("/v1/feedback", json={"completion_id": f"cmpl-hal-{n}", "useful": False})
    assert (await _memory(client, code))["not_useful"] == 7
    question = "What is the code of Hal's gym locker?"
    found = (
        await client.post("/v1/memories/search", json={"query": question, "user": "hal"})
    ).json()
    assert found["data"][0]["id"] == code


async def test_what_feedback_turned_down_stays_turned_down_after_a_restart(
    settings: Settings, registry: TenantRegistry, tenant_key: str, upstream: FakeUpstream
) -> None:
    async with in_process(build_app(settings, registry=registry), tenant_key) as client:
        [code, *_] = await _store(
            client,
            "gus",
            "The code of Gus's gym locker is 3141.",
            "Gus's gym locker room was repainted blue.",
            "Gus lost the key of his bike locker at the gym.",
        )
        await _ask(client, upstream, "gus", QUESTION, "cmpl-before", session="a")
        assert len(await _injected(client, "cmpl-before")) > 1
        await _feedback(client, "cmpl-before", [code])
    # A new process on the same data directory: the question's verdicts come back with it.
    async with in_process(build_app(settings, registry=registry), tenant_key) as client:
        response = await _ask(client, upstream, "gus", QUESTION, "cmpl-after", session="b")
        assert response.headers["x-memory-status"] == "ok"
        assert await _injected(client, "cmpl-after") == [code]
