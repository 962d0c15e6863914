"""Reading a request body without letting an oversized one through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

from proxy.errors import InvalidRequest, RequestTooLarge
from proxy.schemas import Model, parse_body


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (413) by Content-Length or while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("Malformed Content-Length header.", code="invalid_header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A route dependency: the body parsed as ``model`` whatever its Content-Type says.

    curl sends ``-d`` bodies as form data and many scripts forget the header; OpenAI's API
    reads them as JSON, and so do we. Errors are the proxy's 400s, naming the field.
    """

    async def dependency(request: Request) -> Model:
        from proxy.services import get_services  # services imports the routes' modules

        limit = get_services(request).settings.max_body_bytes
        return parse_body(model, await read_body(request, limit))

    return dependency
