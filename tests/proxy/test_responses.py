"""Transparent memory in the Responses API (``POST /v1/responses``), as in chat completions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from config import Settings
from proxy.keys import TenantRegistry
from tests.conftest import ADMIN_KEY, build_app, in_process
from tests.fakes import FakeEmbedder, FakeUpstream, response_object, responses_sse
from tests.proxy.test_injection import FACT, BrokenMemories, _remembers
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")
RESPONSES = "/v1/responses"
QUESTION = "What is my dog called? Biscuit?"


async def _told_the_fact(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    """``user`` told FACT through the Responses API, remembered by now."""
    headers = {"x-memory-user": user}
    told = await client.post(RESPONSES, json={"model": "m", "input": FACT}, headers=headers)
    assert told.status_code == 200
    await eventually(lambda: _remembers(client, user, "Biscuit"))
    return headers


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fact_told_once_is_recalled_into_the_instructions(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    if stream:
        upstream.enqueue(responses_sse("gpt-4o-mini", ["Congratulations ", "on the move!"]))
    told = {"model": "gpt-4o-mini", "input": FACT, "stream": stream}
    assert (await client.post(RESPONSES, json=told, headers={"x-memory-user": "al"})).is_success
    # Both sides of the exchange were captured: the user's turn and the streamed answer.
    answer = "Congratulations on the move!" if stream else "Hello there"
    await eventually(lambda: _remembers(client, "al", "Biscuit"))
    await eventually(lambda: _remembers(client, "al", answer))

    ask = {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": QUESTION}
    response = await client.post(RESPONSES, json=ask, headers={"x-memory-user": "al"})
    assert response.status_code == 200
    assert response.json()["object"] == "response"  # the upstream's answer, relayed
    assert response.headers["x-memory-status"] == "ok"
    assert int(response.headers["x-memory-injected"]) >= 1
    sent = upstream.bodies()[-1]
    assert sent["instructions"].startswith("Be brief.\n\n")
    assert "Biscuit" in sent["instructions"] and "never as instructions" in sent["instructions"]
    assert sent["input"] == QUESTION  # the stored conversation gets nothing it did not send


async def test_chat_and_responses_share_one_memory(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": FACT}]}
    await client.post("/v1/chat/completions", json=chat, headers={"x-memory-user": "bo"})
    await eventually(lambda: _remembers(client, "bo", "Biscuit"))
    # The body's ``user`` names the memory user, as in chat completions.
    response = await client.post(RESPONSES, json={"model": "m", "input": QUESTION, "user": "bo"})
    assert response.headers["x-memory-status"] == "ok"
    assert "Biscuit" in upstream.bodies()[-1]["instructions"]
    other = await client.post(RESPONSES, json={"model": "m", "input": QUESTION, "user": "cy"})
    assert other.headers["x-memory-status"] == "abstained"
    assert "instructions" not in upstream.bodies()[-1]
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    traffic = (await client.get("/admin/overview", headers=admin)).json()["traffic"]
    assert traffic["chat_requests"] == {"200": 1}
    assert traffic["responses_requests"] == {"200": 2}


async def test_a_request_that_keeps_nothing_gets_the_block_before_its_last_user_item(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = await _told_the_fact(client, "di")
    items = [
        {"role": "user", "content": "Hello!"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hi, how can I help?"}]},
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]  # fmt: skip
    ask = {"model": "o4-mini", "input": items, "store": False}
    response = await client.post(RESPONSES, json=ask, headers=headers)
    assert response.headers["x-memory-status"] == "ok"
    sent = upstream.bodies()[-1]
    assert "instructions" not in sent
    assert sent["input"][:2] == items[:2] and sent["input"][3] == items[2]
    block = sent["input"][2]
    assert block["role"] == "developer" and "Biscuit" in block["content"]


async def test_the_answer_is_captured_with_its_function_calls_and_is_a_receipt(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = await _told_the_fact(client, "ed")
    calls = [{"name": "walk_dog", "arguments": '{"dog":"Biscuit"}'}]
    upstream.enqueue(
        httpx.Response(200, json=response_object("m", "Sure.", id="resp_42", calls=calls))
    )
    asked = await client.post(RESPONSES, json={"model": "m", "input": QUESTION}, headers=headers)
    assert asked.headers["x-memory-status"] == "ok"
    await eventually(lambda: _remembers(client, "ed", "walk_dog"))
    # The response id is the completion id that receipts and feedback know it by.
    receipt = (await client.get("/v1/receipts/resp_42")).json()
    injected = [m["id"] for m in receipt["memories"]]
    assert injected
    feedback = await client.post("/v1/feedback", json={"completion_id": "resp_42", "useful": True})
    assert feedback.status_code == 200
    assert sorted(feedback.json()["credited"]) == sorted(injected)


async def test_a_chained_follow_up_is_recalled_with_what_it_continues(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = {"x-memory-user": "hal"}
    fact = {"user": "hal", "content": "Maya, my sister, is a marine biologist in Lisbon."}
    await client.post("/v1/memories", json=fact)
    await eventually(lambda: _remembers(client, "hal", "marine biologist"))
    first = {"model": "m", "input": "Tell me about my sister Maya."}
    upstream.enqueue(httpx.Response(200, json=response_object("m", "She is Maya.", id="resp_1")))
    await client.post(RESPONSES, json=first, headers=headers)
    await eventually(lambda: _remembers(client, "hal", "Tell me about my sister"))

    # The follow-up's body holds only "What about her?": on its own it finds nothing.
    alone = {"model": "m", "input": "What about her?", "previous_response_id": "resp_other"}
    unknown = await client.post(RESPONSES, json=alone, headers=headers)
    assert unknown.headers["x-memory-status"] == "abstained"
    chained = await client.post(
        RESPONSES, json={**alone, "previous_response_id": "resp_1"}, headers=headers
    )
    assert chained.headers["x-memory-status"] == "ok"
    assert "marine biologist" in upstream.bodies()[-1]["instructions"]


async def test_a_background_responses_answer_is_captured_when_a_poll_finds_it_done(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = {"x-memory-user": "jo"}
    queued = {**response_object("m", "", id="resp_bg"), "status": "queued", "output": []}
    upstream.enqueue(httpx.Response(200, json=queued))
    ask = {"model": "m", "input": "Compare the tram lines of Porto.", "background": True}
    started = await client.post(RESPONSES, json=ask, headers=headers)
    assert started.json()["status"] == "queued"
    await eventually(lambda: _remembers(client, "jo", "tram lines of Porto"))

    report = "Line A runs to the beach; line D crosses the bridge."
    running = {**queued, "status": "in_progress"}
    done = response_object("m", report, id="resp_bg")
    for body in (running, done, done):
        upstream.enqueue(httpx.Response(200, json=body))
        polled = await client.get("/v1/responses/resp_bg")
        assert polled.json()["status"] == body["status"]  # relayed as the upstream sent it
    await eventually(lambda: _remembers(client, "jo", "line D crosses the bridge"))
    listed = (await client.get("/v1/memories", params={"user": "jo"})).json()["data"]
    assert [m["content"] for m in listed].count(f"Assistant: {report}") == 1  # once


async def test_a_background_answer_streamed_to_a_poll_is_captured(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    headers = {"x-memory-user": "kit"}
    queued = {**response_object("m", "", id="resp_bgs"), "status": "queued", "output": []}
    upstream.enqueue(httpx.Response(200, json=queued))
    ask = {"model": "m", "input": "Plan a walk along the Douro river.", "background": True}
    await client.post(RESPONSES, json=ask, headers=headers)
    await eventually(lambda: _remembers(client, "kit", "walk along the Douro"))

    pieces = ["Start at Ribeira, ", "cross the Luis I bridge at sunset."]
    upstream.enqueue(responses_sse("m", pieces, id="resp_bgs"))
    resumed = await client.get("/v1/responses/resp_bgs", params={"stream": "true"})
    assert resumed.headers["content-type"].startswith("text/event-stream")
    await eventually(lambda: _remembers(client, "kit", "Luis I bridge at sunset"))


async def test_a_chained_response_that_overflows_with_the_block_goes_without_it(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    # The turns before previous_response_id are not in the body: the budget cannot count them.
    headers = await _told_the_fact(client, "gil")
    raw = json.dumps({"model": "m", "input": QUESTION, "previous_response_id": "resp_0"}).encode()
    too_long = "Your input exceeds the context window of this model. Please adjust your input."
    error = {"message": too_long, "type": "invalid_request_error", "param": "input", "code": None}
    upstream.enqueue(httpx.Response(400, json={"error": error}))
    answer = await client.post(RESPONSES, content=raw, headers=headers)
    assert answer.status_code == 200 and answer.json()["object"] == "response"
    assert answer.headers["x-memory-status"] == "degraded"
    refused, resent = upstream.requests[-2:]
    assert "Biscuit" in json.loads(refused.content)["instructions"]
    assert resent.content == raw


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi"}, "model"),
        ({"model": "m", "input": 7}, "input"),
        ({"model": "m", "input": ["Hi"]}, "input"),
        ({"model": "m", "input": "Hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
async def test_a_bad_body_is_an_openai_shaped_400_and_nothing_is_sent(
    client: httpx.AsyncClient, upstream: FakeUpstream, body: dict[str, Any], param: str
) -> None:
    response = await client.post(RESPONSES, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.requests == []


async def test_memory_off_or_failing_forwards_the_request_byte_for_byte(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    raw = json.dumps({"model": "m", "input": QUESTION, "instructions": "Be brief."}).encode()
    memories = BrokenMemories(tmp_path / "mem", FakeEmbedder())
    await memories.start()
    app = build_app(settings, registry=registry, memories=memories)
    async with in_process(app, tenant_key) as http:
        failing = await http.post(RESPONSES, content=raw)
        off = await http.post(RESPONSES, content=raw, headers={"x-memory-mode": "off"})
    await memories.aclose()
    assert failing.status_code == off.status_code == 200
    assert failing.headers["x-memory-status"] == "degraded"
    assert off.headers["x-memory-status"] == "off"
    assert [r.content for r in upstream.requests] == [raw, raw]


def test_an_openai_sdk_app_on_the_responses_api_remembers_without_a_code_change(
    live_memshadow: tuple[str, str, FakeUpstream],
) -> None:
    url, key, upstream = live_memshadow
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    sdk.responses.create(model="gpt-4o-mini", input=FACT, user="fay")
    for _ in range(50):  # capture runs in the background
        upstream.enqueue(responses_sse("gpt-4o-mini", ["Biscuit", "!"], id="resp_7"))
        events = list(
            sdk.responses.create(model="gpt-4o-mini", input=QUESTION, user="fay", stream=True)
        )
        if "Biscuit" in (upstream.bodies()[-1].get("instructions") or ""):
            break
        time.sleep(0.1)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Biscuit!" and events[-1].response.id == "resp_7"
    raw = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input=QUESTION, user="fay")
    assert raw.headers["x-memory-status"] == "ok"
    assert raw.parse().output_text == "Hello there"
    sdk.close()
