"""A fast mock OpenAI upstream for benchmarks: a raw asyncio HTTP/1.1 server on loopback.

It answers ``POST /v1/chat/completions`` (a fixed small ``chat.completion``, or an SSE stream
of several ``chat.completion.chunk`` events ending in ``data: [DONE]``), ``GET /v1/models`` and
``GET /health``. Any other path is a 404.

Why not FastAPI/uvicorn: the mock is the "direct" baseline that every proxy's added latency is
measured against, so its own cost must be small and constant. A protocol-level server with
pre-encoded responses costs a few tens of microseconds per request; an ASGI stack would add
hundreds, all of it noise in a 2-core machine shared with the proxy under test. uvloop is used
when installed.

Run: ``python bench/mock_upstream.py --port 0`` prints ``LISTENING <port>`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import orjson

T = TypeVar("T")
CHUNK_WORDS = ("Hello", " from", " the", " mock", " upstream", ".")


def _completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "mock-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(CHUNK_WORDS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
        }
    )


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    event = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _sse_events() -> list[bytes]:
    events = [_chunk({"role": "assistant", "content": ""}, None)]
    events += [_chunk({"content": word}, None) for word in CHUNK_WORDS]
    events.append(_chunk({}, "stop"))
    events.append(b"data: [DONE]\n\n")
    return events


def _http_chunk(data: bytes) -> bytes:
    """Frame one piece of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain_response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nx-request-id: req-mock\r\n\r\n"
        + body
    )


# Pre-encoded once: a benchmark baseline should not serialise JSON per request.
COMPLETION = _plain_response(b"200 OK", b"application/json", _completion_body())
MODELS = _plain_response(
    b"200 OK",
    b"application/json",
    orjson.dumps(
        {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}]}
    ),
)
HEALTH = _plain_response(b"200 OK", b"application/json", b'{"status":"ok"}')
NOT_FOUND = _plain_response(
    b"404 Not Found",
    b"application/json",
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nx-request-id: req-mock\r\n\r\n"
)
STREAM_CHUNKS = [_http_chunk(event) for event in _sse_events()]
STREAM_END = b"0\r\n\r\n"
# With no inter-chunk delay the whole stream goes out in one write (still separately framed).
STREAM_ALL = STREAM_HEAD + b"".join(STREAM_CHUNKS) + STREAM_END


class _Request:
    __slots__ = ("body", "method", "path")

    def __init__(self, method: bytes, path: bytes, body: bytes) -> None:
        self.method = method
        self.path = path
        self.body = body


def _parse_head(head: bytes) -> tuple[bytes, bytes, int, bool]:
    """Return method, path, content length and whether the body is chunked."""
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].split(b" ", 2)
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return method, path, length, chunked


def _take_chunked(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None until it is complete."""
    body, pos = bytearray(), start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            if end < 0:
                return None
            return bytes(body), end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        body += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def _take_request(buf: bytes) -> tuple[_Request, int] | None:
    """Parse one complete request from the front of ``buf``; None if more bytes are needed."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    method, path, length, chunked = _parse_head(buf[:head_end])
    start = head_end + 4
    if chunked:
        taken = _take_chunked(buf, start)
        if taken is None:
            return None
        return _Request(method, path, taken[0]), taken[1]
    if len(buf) < start + length:
        return None
    return _Request(method, path, buf[start : start + length]), start + length


def _wants_stream(body: bytes) -> bool:
    # A byte scan first: parsing JSON is only needed when the key is present at all.
    if b'"stream"' not in body:
        return False
    try:
        return bool(orjson.loads(body).get("stream"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection. Requests are answered in order (no pipelining overlap)."""

    def __init__(self, chunk_delay: float) -> None:
        self._chunk_delay = chunk_delay
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._streaming is not None:
            self._streaming.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._drain()

    def _drain(self) -> None:
        # A request that arrives while a delayed stream is still going waits for it to finish.
        while self._transport is not None and self._streaming is None:
            taken = _take_request(self._buf)
            if taken is None:
                return
            request, used = taken
            self._buf = self._buf[used:]
            self._answer(request)

    def _answer(self, request: _Request) -> None:
        assert self._transport is not None
        path = request.path.split(b"?", 1)[0]
        if request.method == b"POST" and path == b"/v1/chat/completions":
            if not _wants_stream(request.body):
                self._transport.write(COMPLETION)
            elif self._chunk_delay <= 0:
                self._transport.write(STREAM_ALL)
            else:
                self._streaming = asyncio.ensure_future(self._stream_slowly())
        elif request.method == b"GET" and path == b"/v1/models":
            self._transport.write(MODELS)
        elif request.method == b"GET" and path == b"/health":
            self._transport.write(HEALTH)
        else:
            self._transport.write(NOT_FOUND)

    async def _stream_slowly(self) -> None:
        try:
            transport = self._transport
            if transport is None:
                return
            transport.write(STREAM_HEAD)
            for chunk in STREAM_CHUNKS:
                transport.write(chunk)
                await asyncio.sleep(self._chunk_delay)
            transport.write(STREAM_END)
        finally:
            self._streaming = None
        self._drain()


async def serve(host: str, port: int, chunk_delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(chunk_delay), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    # The parent process reads this line to learn the port (``--port 0`` picks a free one).
    print(f"LISTENING {bound}", flush=True)
    async with server:
        await server.serve_forever()


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (a cheaper loop), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="Sleep between SSE chunks (default 0)."
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve(args.host, args.port, args.chunk_delay_ms / 1000.0))
    sys.exit(0)


if __name__ == "__main__":
    main()
