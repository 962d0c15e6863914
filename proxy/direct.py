"""The hot routes served in front of FastAPI's router.

Every model call an app makes is ``POST /v1/chat/completions`` or ``POST /v1/responses``.
FastAPI's routing, request-response wrapper, dependency solving and exception middleware
cost ~135 µs per request on the 2-core VM (in-process, one route returning its body: 195 µs
through the full stack against 60 µs through this middleware), an eighth of what the proxy
adds to a request over a bare forwarder (``bench/overhead.py``: the floor target). This
middleware calls the endpoint itself and renders its errors with the same mapping as every
other route (:func:`proxy.errors.openai_error`). Anything that does not match exactly
(another method, a ``root_path`` prefix) falls through to FastAPI, which keeps the routes
registered too: it still answers those and lists them in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import openai_error

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self._routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self._routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as error:  # what FastAPI's handlers would have answered
            response = await openai_error(request, error)
        await response(scope, receive, send)
