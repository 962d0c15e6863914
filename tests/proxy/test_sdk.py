"""End to end with the official openai SDK against a live loopback MemShadow.

Two real servers on 127.0.0.1: a scripted upstream and MemShadow pointed at it. The SDK is
configured exactly as an app would be: base URL and a tenant key, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from config import Settings
from proxy.keys import TenantRegistry
from tests.conftest import LoopbackServer, build_app, free_port
from tests.fakes import FakeUpstream, answered_lifespan, completion


@pytest.fixture
def fake_upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def live(tmp_path: Path, fake_upstream: FakeUpstream) -> Iterator[tuple[str, str]]:
    with LoopbackServer(fake_upstream.asgi()) as upstream_server:
        settings = Settings(
            upstream_base_url=f"{upstream_server.url}/v1",
            upstream_api_key="sk-upstream",
            data_dir=tmp_path / "data",
        )
        registry = TenantRegistry(str(settings.data_dir / "registry"))
        key, _ = registry.create_key("acme")
        with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
            yield f"{proxy_server.url}/v1", key


@pytest.fixture
def sdk(live: tuple[str, str]) -> Iterator[openai.OpenAI]:
    base_url, key = live
    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        yield client


MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Hello"}]


def test_plain(sdk: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello there"
    assert fake_upstream.bodies()[0]["messages"] == MESSAGES


def test_streamed(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello there"


def test_tools(sdk: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Porto"}'},
    }
    fake_upstream.enqueue(
        httpx.Response(200, json=completion("gpt-4o-mini", None, tool_calls=[call]))
    )  # type: ignore[arg-type]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=tools, tool_choice="auto"
    )  # type: ignore[arg-type]
    tool_call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert tool_call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(tool_call.function.arguments) == {"city": "Porto"}  # type: ignore[union-attr]
    sent = fake_upstream.bodies()[0]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"


def test_json_mode(sdk: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(httpx.Response(200, json=completion("gpt-4o-mini", '{"ok": true}')))
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        response_format={"type": "json_object"},  # type: ignore[arg-type]
    )
    assert json.loads(answer.choices[0].message.content or "") == {"ok": True}
    assert fake_upstream.bodies()[0]["response_format"] == {"type": "json_object"}


def test_upstream_errors_become_the_sdks_typed_exceptions(
    sdk: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.enqueue(
        httpx.Response(
            429,
            json={
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        )
    )
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "rate_limit_exceeded"
    fake_upstream.enqueue(
        httpx.Response(
            400,
            json={
                "error": {
                    "message": "bad model",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": None,
                }
            },
        )
    )
    with pytest.raises(openai.BadRequestError, match="bad model"):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]


def test_a_wrong_key_is_the_sdks_authentication_error(live: tuple[str, str]) -> None:
    base_url, _ = live
    client = openai.OpenAI(base_url=base_url, api_key="msk-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_models_and_embeddings_pass_through(
    sdk: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini"]
    fake_upstream.enqueue(
        httpx.Response(
            200,
            json={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )
    )
    vectors = sdk.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert vectors.data[0].embedding == [0.1, 0.2]


async def test_client_disconnect_cancels_the_upstream_stream(tmp_path: Path) -> None:
    """A client that walks away mid-stream makes the proxy close its upstream connection."""
    closed = threading.Event()  # set on the upstream server's thread

    async def slow_upstream(scope, receive, send):  # type: ignore[no-untyped-def]
        if await answered_lifespan(scope, receive, send):
            return
        while (await receive()).get("more_body"):
            pass

        async def watch() -> None:
            if (await receive())["type"] == "http.disconnect":
                closed.set()

        watcher = asyncio.ensure_future(watch())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(200):
            if closed.is_set():
                return
            chunk = {"choices": [{"index": 0, "delta": {"content": f"{i} "}}]}
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True,
                }
            )
            await asyncio.sleep(0.05)
        watcher.cancel()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    with LoopbackServer(slow_upstream) as upstream_server:
        settings = Settings(upstream_base_url=f"{upstream_server.url}/v1", data_dir=tmp_path / "d")
        registry = TenantRegistry(str(settings.data_dir / "registry"))
        key, _ = registry.create_key("acme")
        with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
            async with httpx.AsyncClient(base_url=proxy_server.url) as http:
                body = {"model": "m", "stream": True, "messages": MESSAGES}
                async with http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                ) as response:
                    async for _ in response.aiter_bytes():
                        break  # first chunk arrived: hang up
            deadline = time.monotonic() + 10
            while not closed.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    assert closed.is_set(), "the upstream kept streaming after the client left"


def test_unreachable_and_slow_upstreams_through_the_real_transport(tmp_path: Path) -> None:
    """502 for a refused connection and 504 for a read timeout, over real sockets."""

    async def silent_upstream(scope, receive, send):  # type: ignore[no-untyped-def]
        if await answered_lifespan(scope, receive, send):
            return
        await asyncio.sleep(1.0)  # past the 0.5 s timeout, short enough for shutdown

    with LoopbackServer(silent_upstream) as slow:
        for base_url, status in (
            (f"http://127.0.0.1:{free_port()}/v1", 502),
            (f"{slow.url}/v1", 504),
        ):
            settings = Settings(
                upstream_base_url=base_url, upstream_timeout_s=0.5, data_dir=tmp_path / str(status)
            )
            registry = TenantRegistry(str(settings.data_dir / "registry"))
            key, _ = registry.create_key("acme")
            with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
                client = openai.OpenAI(
                    base_url=f"{proxy_server.url}/v1", api_key=key, max_retries=0
                )
                with client, pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            assert caught.value.status_code == status
            assert caught.value.code == (
                "upstream_unavailable" if status == 502 else "upstream_timeout"
            )


def test_upstream_cookies_never_cross_tenants(tmp_path: Path) -> None:
    """The upstream client is shared by every tenant: a Set-Cookie must not be replayed."""
    seen_cookies: list[str | None] = []
    upstream = FakeUpstream()
    original = upstream.handle

    def handle(request: httpx.Request) -> httpx.Response:
        seen_cookies.append(request.headers.get("cookie"))
        response = original(request)
        response.headers["set-cookie"] = "session=tenant-a-secret; Path=/"
        return response

    upstream.handle = handle  # type: ignore[method-assign]
    with LoopbackServer(upstream.asgi()) as upstream_server:
        # By name, not IP: cookie jars refuse cookies from bare IP addresses by default.
        by_name = upstream_server.url.replace("127.0.0.1", "localhost")
        settings = Settings(upstream_base_url=f"{by_name}/v1", data_dir=tmp_path / "c")
        registry = TenantRegistry(str(settings.data_dir / "registry"))
        keys = [registry.create_key(name)[0] for name in ("tenant-a", "tenant-b")]
        with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
            for key in keys:
                client = openai.OpenAI(
                    base_url=f"{proxy_server.url}/v1", api_key=key, max_retries=0
                )
                with client:
                    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert seen_cookies == [None, None]


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_before_the_answer_cancels_the_upstream_call(
    tmp_path: Path, stream: bool
) -> None:
    """A client that gives up while the upstream is still thinking frees the upstream too."""
    closed = threading.Event()

    async def thinking_upstream(scope, receive, send):  # type: ignore[no-untyped-def]
        if await answered_lifespan(scope, receive, send):
            return
        while (await receive()).get("more_body"):
            pass
        if (await receive())["type"] == "http.disconnect":  # waits until the proxy hangs up
            closed.set()

    with LoopbackServer(thinking_upstream) as upstream_server:
        settings = Settings(upstream_base_url=f"{upstream_server.url}/v1", data_dir=tmp_path / "d")
        registry = TenantRegistry(str(settings.data_dir / "registry"))
        key, _ = registry.create_key("acme")
        with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
            body = {"model": "m", "stream": stream, "messages": MESSAGES}
            headers = {"authorization": f"Bearer {key}", "x-memory-mode": "off"}
            async with httpx.AsyncClient(base_url=proxy_server.url) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/v1/chat/completions", json=body, headers=headers, timeout=0.5)
            deadline = time.monotonic() + 10
            while not closed.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    assert closed.is_set(), "the upstream call outlived the client"
