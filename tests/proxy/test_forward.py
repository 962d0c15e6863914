"""Every other /v1 endpoint (the Responses API, moderations, files…) is forwarded as is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import respx

from config import Settings
from config.settings import ModelRoute
from proxy.keys import TenantRegistry
from tests.conftest import UPSTREAM, LoopbackServer, build_app, in_process
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.usefixtures("upstream")

RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_700_000_000,
    "status": "completed",
    "model": "gpt-4o-mini",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def _events(*events: dict[str, object]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


async def test_a_request_goes_on_untouched_with_the_upstreams_credentials(
    client: httpx.AsyncClient, tenant_key: str, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.Response(200, json=RESPONSE, headers={"x-ratelimit-remaining": "9"}))
    body = b'{"model":"gpt-4o-mini","input":"Hi","store":false,"future_field":{"a":1}}'
    answer = await client.post(
        "/v1/responses",
        content=body,
        headers={"content-type": "application/json", "openai-beta": "responses=v1"},
    )
    assert answer.status_code == 200
    assert answer.json() == RESPONSE
    assert answer.headers["x-ratelimit-remaining"] == "9"
    assert answer.headers["content-type"] == "application/json"
    sent = upstream.requests[-1]
    assert sent.url == f"{UPSTREAM}/responses"
    assert sent.content == body  # byte for byte
    assert sent.headers["authorization"] == "Bearer sk-upstream"
    assert sent.headers["openai-beta"] == "responses=v1"
    assert tenant_key not in str(sent.headers)


async def test_queries_methods_and_upstream_errors_pass_as_they_are(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.Response(200, json={"object": "list", "data": []}))
    listed = await client.get("/v1/responses/resp_1/input_items", params={"limit": "5"})
    assert listed.status_code == 200
    assert str(upstream.requests[-1].url) == f"{UPSTREAM}/responses/resp_1/input_items?limit=5"
    missing = {"error": {"message": "No response 'resp_x'", "type": "invalid_request_error",
                         "param": None, "code": None}}  # fmt: skip
    upstream.enqueue(httpx.Response(404, json=missing))
    gone = await client.delete("/v1/responses/resp_x")
    assert gone.status_code == 404
    assert gone.json() == missing
    assert upstream.requests[-1].method == "DELETE"


async def test_a_multipart_upload_keeps_its_content_type(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.Response(200, json={"id": "file-1", "object": "file"}))
    uploaded = await client.post(
        "/v1/files", files={"file": ("notes.jsonl", b'{"a": 1}\n')}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200
    sent = upstream.requests[-1]
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'{"a": 1}' in sent.content and b"batch" in sent.content


async def test_a_stream_is_relayed_as_events(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    events = _events(
        {"type": "response.output_text.delta", "delta": "Hi"},
        {"type": "response.completed", "response": RESPONSE},
    )
    upstream.enqueue(
        httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
    )
    async with client.stream(
        "POST", "/v1/responses", json={"model": "m", "input": "Hi", "stream": True}
    ) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert b"".join([chunk async for chunk in answer.aiter_bytes()]) == events


async def test_without_a_key_nothing_is_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    refused = await client.post(
        "/v1/responses", json={"model": "m", "input": "Hi"}, headers={"authorization": ""}
    )
    assert refused.status_code == 401
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    assert upstream.requests == []


async def test_memshadows_own_paths_are_never_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    for method, path, status in (
        ("PUT", "/v1/memories/m1", 405),  # the path is MemShadow's, the method is not
        ("POST", "/v1/receipts/x/y", 404),
    ):
        answer = await client.request(method, path, json={"content": "a private memory"})
        assert answer.status_code == status
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert upstream.requests == []


async def test_stored_chat_completions_are_the_upstreams(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    # OpenAI lists stored completions at GET /v1/chat/completions; only POST is MemShadow's.
    upstream.enqueue(httpx.Response(200, json={"object": "list", "data": []}))
    listed = await client.get("/v1/chat/completions", params={"limit": "2"})
    assert listed.status_code == 200
    assert str(upstream.requests[-1].url) == f"{UPSTREAM}/chat/completions?limit=2"


async def test_a_litellm_model_is_refused_clearly_and_a_renamed_one_is_renamed(
    settings: Settings, registry: TenantRegistry, tenant_key: str, upstream: FakeUpstream
) -> None:
    routes = [
        ModelRoute(model_name="claude", litellm_params={"model": "anthropic/claude-x"}),
        ModelRoute(model_name="fast", litellm_params={"model": "openai/gpt-4o-mini"}),
    ]
    app = build_app(settings.model_copy(update={"model_list": routes}), registry=registry)
    async with in_process(app, tenant_key) as client:
        refused = await client.post("/v1/completions", json={"model": "claude", "prompt": "Hi"})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "model"
        assert "anthropic" in refused.json()["error"]["message"]
        upstream.enqueue(httpx.Response(200, json=RESPONSE))
        renamed = await client.post("/v1/responses", json={"model": "fast", "input": "Hi"})
        assert renamed.status_code == 200
        assert json.loads(upstream.requests[-1].content) == {"model": "gpt-4o-mini", "input": "Hi"}


@pytest.fixture
def sdk(tmp_path: Path, router: respx.MockRouter) -> Iterator[openai.OpenAI]:
    """The official SDK against a live loopback MemShadow; the upstream is scripted below."""
    settings = Settings(
        upstream_base_url=f"{UPSTREAM}", upstream_api_key="sk-upstream", data_dir=tmp_path / "d"
    )
    registry = TenantRegistry(str(settings.data_dir / "registry"))
    key, _ = registry.create_key("acme")
    with (
        LoopbackServer(build_app(settings, registry=registry)) as server,
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as client,
    ):
        yield client


def test_the_openai_sdks_responses_api_works_plain_and_streamed(
    sdk: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.Response(200, json=RESPONSE))
    answer = sdk.responses.create(model="gpt-4o-mini", input="Hi")
    assert answer.output_text == "Hi there"
    events = _events(
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "Hi", "sequence_number": 1, "logprobs": []},
        {"type": "response.completed", "response": RESPONSE, "sequence_number": 2},
    )  # fmt: skip
    upstream.enqueue(
        httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
    )
    stream = sdk.responses.create(model="gpt-4o-mini", input="Hi", stream=True)
    received = list(stream)
    assert [e.type for e in received] == ["response.output_text.delta", "response.completed"]
    assert received[0].delta == "Hi"  # type: ignore[union-attr]
    assert received[1].response.output_text == "Hi there"  # type: ignore[union-attr]
    upstream.enqueue(httpx.Response(429, json={"error": {"message": "slow down",
                     "type": "rate_limit_error", "param": None, "code": None}}))  # fmt: skip
    with pytest.raises(openai.RateLimitError, match="slow down"):
        sdk.responses.create(model="gpt-4o-mini", input="Hi")


async def test_forwarded_calls_count_against_the_tenants_request_limit(
    client: httpx.AsyncClient, registry: TenantRegistry, upstream: FakeUpstream
) -> None:
    registry.put_tenant("acme", policy={"requests_per_minute": 2})
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    upstream.enqueue(httpx.Response(200, json=RESPONSE))
    assert (
        await client.post("/v1/responses", json={"model": "m", "input": "Hi"})
    ).status_code == 200
    refused = await client.post("/v1/responses", json={"model": "m", "input": "Hi"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 2
