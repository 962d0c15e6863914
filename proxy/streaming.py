"""Relaying an upstream SSE stream to the client, chunk by chunk.

Starlette's ``StreamingResponse`` only notices a vanished client on its next write under ASGI
2.4, which can be many seconds into a slow generation. This response watches for the
disconnect while it relays and cancels the upstream call the moment it happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.disconnect import cancelled_on_disconnect
from proxy.errors import ProxyError
from proxy.upstream import UpstreamStream

logger = logging.getLogger("memshadow.streaming")


def sse_error_event(error: ProxyError) -> bytes:
    """An error after the 200 went out: the SDKs raise on an ``error`` event in the stream."""
    return b"data: " + orjson.dumps(error.to_body()) + b"\n\n"


class StreamObserver:
    """Sees every relayed chunk and learns how the stream ended (base: observes nothing)."""

    def on_chunk(self, chunk: bytes) -> None:
        return None

    def on_end(self, completed: bool) -> None:
        return None


SSE = "text/event-stream; charset=utf-8"


class RelayResponse(Response):
    """A response that relays ``stream`` as ``content_type`` (server-sent events unless told
    otherwise: the other endpoints' answers are relayed as whatever the upstream sent)."""

    def __init__(
        self,
        stream: UpstreamStream,
        headers: Mapping[str, str],
        observer: StreamObserver | None = None,
        *,
        content_type: str = SSE,
    ) -> None:
        self._stream = stream
        self.status_code = stream.status_code
        self.background: BackgroundTask | None = None
        self._observer = observer or StreamObserver()
        self._events = content_type.startswith("text/event-stream")
        raw = {
            **stream.headers,
            **headers,
            "content-type": content_type,
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        }
        self.raw_headers = [(k.lower().encode(), v.encode()) for k, v in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self._stream.status_code,
                "headers": self.raw_headers,
            }
        )
        completed = False
        try:
            async with cancelled_on_disconnect(receive) as gone:
                completed = await self._relay(send)
            if gone.happened:
                logger.info("client disconnected; cancelled the upstream stream")
        finally:
            await self._stream.aclose()
            self._observer.on_end(completed)
        if completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay(self, send: Send) -> bool:
        """Send every chunk on; ``False`` when the upstream broke off mid-stream."""
        observe: Callable[[bytes], None] = self._observer.on_chunk
        try:
            async for chunk in self._stream.chunks:
                observe(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ProxyError as error:
            logger.warning("upstream stream failed after it started: %s", error.message)
            # Events can say so; any other body can only end short.
            ending = sse_error_event(error) if self._events else b""
            await send({"type": "http.response.body", "body": ending, "more_body": False})
            return False
        return True
