"""/v1/chat/completions over ASGI with respx upstreams: pass-through, streaming, errors."""

from __future__ import annotations

import json

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.conftest import ASGI_BASE
from tests.fakes import FakeUpstream, completion

pytestmark = pytest.mark.usefixtures("upstream")

CHAT = "/v1/chat/completions"


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = body["error"]
    return error


async def test_unowned_fields_pass_through_byte_for_byte(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    raw = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                    ],
                }
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "response_format": {"type": "json_object"},
            "n": 2,
            "logprobs": True,
            "seed": 7,
            "a_future_field": {"nested": [1, 2]},
        },
        indent=1,  # odd formatting: proves the bytes are not re-serialised
    ).encode()
    response = await client.post(CHAT, content=raw, headers={"x-memory-mode": "off"})
    assert response.status_code == 200
    assert upstream.requests[0].content == raw
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-upstream"
    assert response.json() == completion("gpt-4o-mini", "Hello there")


async def test_tenant_key_is_never_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream, tenant_key: str
) -> None:
    await client.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    sent = upstream.requests[0]
    assert tenant_key not in str(sent.headers)
    assert tenant_key.encode() not in sent.content


async def test_answer_is_returned_as_the_upstream_sent_it(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    raw = b'{"id":"x","object":"chat.completion","choices":[],"weird_vendor_field":1}'
    upstream.enqueue(
        httpx.Response(200, content=raw, headers={"x-ratelimit-remaining-requests": "99"})
    )
    response = await client.post(
        CHAT,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-memory-mode": "off"},
    )
    assert response.content == raw
    assert response.headers["x-ratelimit-remaining-requests"] == "99"
    assert response.headers["x-memory-status"] == "off"


async def test_stream_is_relayed_chunk_for_chunk(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in response.aiter_text()])
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in text.splitlines()
        if line.startswith("data: {")
    ]
    assert deltas == ["Hello", " there"]
    assert text.rstrip().endswith("data: [DONE]")


async def test_request_id_is_generated_or_kept(client: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    generated = await client.post(CHAT, json=body)
    assert generated.headers["x-request-id"].startswith("req_")
    kept = await client.post(CHAT, json=body, headers={"x-request-id": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    missing_route = await client.get("/nothing-here")  # (other /v1 paths are the upstream's)
    assert missing_route.status_code == 404
    assert missing_route.headers["x-request-id"]


@pytest.mark.parametrize(
    ("content", "param", "fragment"),
    [
        (b"{not json", None, "parse the JSON"),
        (b"", None, "empty"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "Field required"),
        (b'{"model": "m", "messages": []}', "messages", "at least 1"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages.0.role", "required"),
        (b'{"model": "m", "messages": "hi"}', "messages", "array"),
        (b'{"model": "m", "messages": [{"role":"user"}], "stream": "yes"}', "stream", "boolean"),
        (b"[1, 2]", None, "object"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    content: bytes,
    param: str | None,
    fragment: str,
) -> None:
    response = await client.post(CHAT, content=content)
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment.lower() in str(error["message"]).lower()
    assert upstream.requests == []


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    huge = (
        b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    )
    response = await client.post(CHAT, content=huge)
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"
    assert upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        ),
        (
            400,
            {
                "error": {
                    "message": "Bad tool schema",
                    "type": "invalid_request_error",
                    "param": "tools",
                    "code": None,
                }
            },
        ),
        (
            503,
            {
                "error": {
                    "message": "overloaded",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
    ],
)
async def test_upstream_errors_pass_through_with_status_and_message(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    status: int,
    payload: dict[str, object],
    stream: bool,
) -> None:
    upstream.enqueue(httpx.Response(status, json=payload, headers={"retry-after": "3"}))
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post(CHAT, json=body)
    assert response.status_code == status
    assert response.json() == payload
    assert response.headers["retry-after"] == "3"


async def test_non_json_upstream_error_is_wrapped(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.Response(500, text="<html>Internal Server Error</html>"))
    response = await client.post(
        CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 500
    assert "Internal Server Error" in str(_error(response)["message"])


@pytest.mark.parametrize(
    ("exception", "status", "code"),
    [
        (httpx.ConnectError("connection refused"), 502, "upstream_unavailable"),
        (httpx.ReadTimeout("read timed out"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("connect timed out"), 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_transport_failures_map_to_502_and_504(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    exception: Exception,
    status: int,
    code: str,
    stream: bool,
) -> None:
    upstream.enqueue(exception)
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post(CHAT, json=body)
    assert response.status_code == status
    error = _error(response)
    assert error["code"] == code
    assert "Traceback" not in response.text


async def test_the_chat_route_answers_alike_in_front_of_and_through_fastapis_router(
    app: FastAPI, tenant_key: str, upstream: FakeUpstream
) -> None:
    """The hot route is served in front of FastAPI's router (proxy.direct); behind a root
    path it falls through to the router, which must give the same answer and errors."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {tenant_key}", "x-memory-mode": "off"}
    answers = []
    async with LifespanManager(app) as manager:
        for root in ("", "/memshadow"):
            transport = httpx.ASGITransport(app=manager.app, root_path=root)
            async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE) as http:
                ok = await http.post(root + CHAT, json=body, headers=headers)
                bad = await http.post(root + CHAT, content=b"{", headers=headers)
                openapi = await http.get(root + "/openapi.json")
            answers.append((ok.status_code, ok.json(), bad.status_code, _error(bad)["param"]))
            assert ok.headers["x-request-id"].startswith("req_")
            assert CHAT in openapi.json()["paths"]
    assert len(upstream.requests) == 2
    assert answers[0] == answers[1] == (200, completion("m", "Hello there"), 400, None)
