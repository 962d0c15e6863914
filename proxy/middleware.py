"""A pure ASGI middleware for ``X-Request-Id`` on every response.

Hand-written rather than ``asgi-correlation-id`` because we need only this, and a pure ASGI
wrapper costs a few microseconds where a ``BaseHTTPMiddleware`` costs a task per request.
A client-sent id is kept when it looks like an id (printable, at most 128 characters).
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ACCEPTABLE_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (
            next(
                (
                    value.decode()
                    for name, value in scope["headers"]
                    if name == b"x-request-id" and _ACCEPTABLE_ID.match(value)
                ),
                None,
            )
            or new_request_id()
        )
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
