"""Non-OpenAI providers through LiteLLM: an Anthropic route, plain and streamed (respx), in
chat completions and the Responses API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from config import ModelRoute, Settings
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.proxy.test_injection import _remembers
from tests.proxy.test_memories_api import eventually

ANTHROPIC = "https://api.anthropic.com/v1/messages"


def _anthropic_message(text: str) -> dict[str, object]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 3},
    }


def _anthropic_stream(pieces: list[str]) -> bytes:
    events: list[tuple[str, dict[str, object]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**_anthropic_message(""), "content": [], "stop_reason": None},
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


@pytest.fixture
def anthropic(no_aiohttp: None) -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.post(ANTHROPIC)


@pytest.fixture
async def claude_client(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    routed = settings.model_copy(
        update={
            "model_list": [
                ModelRoute(
                    model_name="claude",
                    litellm_params={
                        "model": "anthropic/claude-sonnet-4-5",
                        "api_key": "sk-ant-test",
                    },
                )
            ]
        }
    )
    app = build_app(routed, registry=registry)
    async with in_process(app, tenant_key) as http:
        yield http


BODY = {
    "model": "claude",
    "max_tokens": 64,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ],
}


async def test_plain_completion_comes_back_in_openai_format(
    claude_client: httpx.AsyncClient, anthropic: respx.Route
) -> None:
    anthropic.mock(return_value=httpx.Response(200, json=_anthropic_message("Hi there")))
    response = await claude_client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", "Hi there")
    sent = json.loads(anthropic.calls.last.request.content)
    assert sent["model"] == "claude-sonnet-4-5"
    assert sent["system"] == "Be brief." or sent["system"][0]["text"] == "Be brief."
    assert anthropic.calls.last.request.headers["x-api-key"] == "sk-ant-test"


async def test_streamed_completion_comes_back_as_openai_chunks(
    claude_client: httpx.AsyncClient, anthropic: respx.Route
) -> None:
    anthropic.mock(
        return_value=httpx.Response(
            200,
            content=_anthropic_stream(["Hi", " there"]),
            headers={"content-type": "text/event-stream"},
        )
    )
    async with claude_client.stream(
        "POST", "/v1/chat/completions", json=BODY | {"stream": True}
    ) as response:
        await response.aread()
        assert response.status_code == 200, response.text
        text = "".join([t async for t in response.aiter_text()])
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "Hi there"
    assert text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("stream", [False, True])
async def test_provider_errors_keep_their_status(
    claude_client: httpx.AsyncClient, anthropic: respx.Route, stream: bool
) -> None:
    anthropic.mock(
        return_value=httpx.Response(
            429,
            json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
        )
    )
    response = await claude_client.post("/v1/chat/completions", json=BODY | {"stream": stream})
    assert response.status_code == 429
    error = response.json()["error"]
    assert "slow down" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def _system_text(sent: dict[str, object]) -> str:
    system = sent.get("system") or ""
    return system if isinstance(system, str) else " ".join(p["text"] for p in system)


async def test_the_responses_api_through_litellm_remembers_plain_and_streamed(
    claude_client: httpx.AsyncClient, anthropic: respx.Route
) -> None:
    headers = {"x-memory-user": "gus"}
    fact = {"user": "gus", "content": "Gus lives in Porto since 2023."}
    await claude_client.post("/v1/memories", json=fact)
    await eventually(lambda: _remembers(claude_client, "gus", "Porto"))
    ask = {"model": "claude", "instructions": "Be brief.", "input": "Where do I live, Porto?"}

    anthropic.mock(return_value=httpx.Response(200, json=_anthropic_message("In Porto.")))
    plain = await claude_client.post("/v1/responses", json=ask, headers=headers)
    assert plain.status_code == 200, plain.text
    assert plain.headers["x-memory-status"] == "ok"
    body = plain.json()
    assert body["object"] == "response"
    assert body["output"][0]["content"][0]["text"] == "In Porto."
    sent = json.loads(anthropic.calls.last.request.content)
    assert sent["model"] == "claude-sonnet-4-5"
    system = _system_text(sent)
    assert system.startswith("Be brief.") and "<memories>" in system and "Porto since" in system
    assert [m["role"] for m in sent["messages"]] == ["user"]

    anthropic.mock(
        return_value=httpx.Response(
            200,
            content=_anthropic_stream(["You live ", "by the Douro."]),
            headers={"content-type": "text/event-stream"},
        )
    )
    async with claude_client.stream(
        "POST", "/v1/responses", json=ask | {"stream": True}, headers=headers
    ) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["x-memory-status"] == "ok"
        text = "".join([t async for t in streamed.aiter_text()])
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert names == [d["type"] for d in datas]  # each event named as OpenAI names them
    assert names[0] == "response.created" and names[-1] == "response.completed"
    deltas = [d["delta"] for d in datas if d["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "You live by the Douro."
    # The streamed answer was captured like any other.
    await eventually(lambda: _remembers(claude_client, "gus", "You live by the Douro."))
