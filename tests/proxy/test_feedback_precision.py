"""Feedback makes the injected set smaller and more precise, through the HTTP surface."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.proxy.test_feedback import _ask, _memory, _store

pytestmark = pytest.mark.usefixtures("upstream")

QUESTION = "What is the code of Gus's gym locker?"


async def _injected(client: httpx.AsyncClient, completion_id: str) -> list[str]:
    receipt = (await client.get(f"/v1/receipts/{completion_id}")).json()
    return [m["id"] for m in receipt["memories"]]


async def test_memories_that_keep_failing_stop_being_injected(
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
    for n in range(4):
        response = await _ask(client, upstream, "gus", QUESTION, f"cmpl-gus-{n}", session=f"g{n}")
        assert response.headers["x-memory-status"] == "ok"
        injected = await _injected(client, f"cmpl-gus-{n}")
        rounds.append(injected)
        useless = [m for m in injected if m != code]
        for useful, ids in ((True, [code]), (False, useless)):
            if ids:
                await client.post(
                    "/v1/feedback",
                    json={"completion_id": f"cmpl-gus-{n}", "useful": useful, "memory_ids": ids},
                )
    assert code in rounds[0] and len(rounds[0]) > 1  # the noise was injected at first
    # Three failures and never useful: dropped. The fact that helped every time stays.
    assert rounds[-1] == [code]
    assert (await _memory(client, noise[0]))["not_useful"] >= 3
    # Dropped from recall, not deleted: still readable through the API.
    assert (await client.get(f"/v1/memories/{noise[0]}")).status_code == 200


async def test_a_memory_that_helped_once_is_still_recalled(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    # Usefulness is per memory, relevance per request: one that helped a request and failed
    # others sinks, but is not dropped. (Searched, not chatted: after so many failures the
    # tenant's calibration rightly abstains at this confidence.)
    [code, *_] = await _store(
        client,
        "hal",
        "The code of Hal's gym locker is 2718.",
        "Hal's cat is called Pixel.",
        "Hal flew to Oslo in March.",
    )
    question = "What is the code of Hal's gym locker?"
    await _ask(client, upstream, "hal", question, "cmpl-hal-0", session="h0")
    await client.post("/v1/feedback", json={"completion_id": "cmpl-hal-0", "useful": True})
    for n in range(1, 8):  # seven failures: a posterior mean of 0.27, under the floor
        await _ask(client, upstream, "hal", question, f"cmpl-hal-{n}", session=f"h{n}")
        await client.post("/v1/feedback", json={"completion_id": f"cmpl-hal-{n}", "useful": False})
    stored = await _memory(client, code)
    assert (stored["useful"], stored["not_useful"]) == (1, 7)
    found = (
        await client.post("/v1/memories/search", json={"query": question, "user": "hal"})
    ).json()
    assert found["data"][0]["id"] == code
