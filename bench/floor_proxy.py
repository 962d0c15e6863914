"""The floor: the least a Python proxy on MemShadow's transport can add, for ``overhead.py``.

A bare ASGI app under the same server (uvicorn, httptools, uvloop) that forwards
``POST /v1/chat/completions`` to the upstream over MemShadow's own pooled client
(:func:`proxy.app.build_http_client`: httpx's API over aiohttp's pool) and relays the answer,
plain or streamed chunk by chunk. No framework, no auth, no parsing, no memory, no metrics.

Why it is in the benchmark: the added-latency goals are absolute milliseconds, and what a
request costs in CPU depends on the machine (shared 2-core VMs differ several-fold between
sessions). MemShadow minus the floor, measured in the same rounds, is what MemShadow's own
code costs; the floor itself is what any httpx-based proxy pays on this machine.

Run: ``UPSTREAM=http://127.0.0.1:PORT/v1 uvicorn bench.floor_proxy:app --port N``.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from config import Settings
from proxy.app import build_http_client

_UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:9/v1").rstrip("/")
_HEADERS = {"authorization": "Bearer sk-mock", "content-type": "application/json"}
_client: dict[str, httpx.AsyncClient] = {}


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _client["http"] = build_http_client(Settings(upstream_base_url=_UPSTREAM))
                await send({"type": "lifespan.startup.complete"})
            else:
                await _client["http"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] != "/v1/chat/completions":  # the readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = await _body(receive)
    request = httpx.Request("POST", f"{_UPSTREAM}/chat/completions", content=body, headers=_HEADERS)
    if b'"stream":true' not in body:  # the load generator's bodies are compact JSON
        reply = await _client["http"].send(request)
        await _start(send, reply)
        await send({"type": "http.response.body", "body": reply.content})
        return
    response = await _client["http"].send(request, stream=True)
    await _start(send, response)
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await response.aclose()
    await send({"type": "http.response.body", "body": b""})


async def _start(send: Any, response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "application/json").encode()
    headers = [(b"content-type", content_type)]
    if "content-length" in response.headers:
        headers.append((b"content-length", response.headers["content-length"].encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
