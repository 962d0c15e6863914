"""One exception hierarchy, rendered once as OpenAI's error JSON.

    ProxyError
    ├── InvalidRequest (400)
    │   └── RequestTooLarge (413)
    ├── AuthenticationFailed (401)
    ├── PermissionDenied (403)
    ├── NotFound (404)
    ├── RateLimited (429, the tenant's own requests_per_minute)
    ├── UpstreamError (the upstream's own status, passed through)
    ├── UpstreamUnavailable (502)
    ├── UpstreamTimeout (504)
    ├── SharedStateUnavailable (503)
    └── MemoryWritesPending (503, acknowledged stores not applied within the wait)

Every response the proxy produces on failure is
``{"error": {"message", "type", "param", "code"}}`` with the matching HTTP status, so the
openai SDKs raise their usual typed exceptions. Foreign exceptions (FastAPI validation,
Starlette's HTTP errors, anything unexpected) are converted in :func:`openai_error` and
nowhere else; an unexpected exception becomes a 500 without a traceback in the body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from memory.stream import IngestBehind

logger = logging.getLogger("memshadow.errors")


class ProxyError(Exception):
    """Base of every error the proxy reports to a client."""

    status_code = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ProxyError):
    status_code = 400
    type = "invalid_request_error"


class RequestTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class AuthenticationFailed(ProxyError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ProxyError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class RateLimited(ProxyError):
    """The tenant sent more requests than its policy allows; ``Retry-After`` says when."""

    status_code = 429
    type = "requests"
    code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    """The upstream answered with an error; its status and message pass through."""

    type = "upstream_error"

    @property
    def overflows_context(self) -> bool:
        """Whether the upstream refused the request as longer than the model's window (the
        code OpenAI sends, or how vLLM, Anthropic, Gemini and LiteLLM word it)."""
        return self.status_code in (400, 413, 422) and (
            self.code == "context_length_exceeded" or bool(_CONTEXT_OVERFLOW.search(self.message))
        )


_CONTEXT_OVERFLOW = re.compile(
    r"context[ _](?:length|window)|maximum context|prompt is too long|too many (?:input )?tokens"
    r"|input token count .* exceeds",
    re.IGNORECASE,
)


class UpstreamUnavailable(ProxyError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(ProxyError):
    status_code = 504
    type = "upstream_error"
    code = "upstream_timeout"


class SharedStateUnavailable(ProxyError):
    """Redis (the state replicas share) did not answer; chat never raises this."""

    status_code = 503
    type = "server_error"
    code = "shared_state_unavailable"


class MemoryUnavailable(ProxyError):
    """This server runs without its memory engine (it failed to load, or is turned off)."""

    status_code = 503
    type = "server_error"
    code = "memory_unavailable"


class MemoryWritesPending(ProxyError):
    """Memories acknowledged earlier are not in the store yet (their writer is failing
    over); a read that must see them answers this rather than miss them."""

    status_code = 503
    type = "server_error"
    code = "memory_writes_pending"


def error_response(error: ProxyError, headers: dict[str, str] | None = None) -> Response:
    merged = {**error.headers, **(headers or {})}
    return Response(
        orjson.dumps(error.to_body()),
        status_code=error.status_code,
        media_type="application/json",
        headers=merged,
    )


_STATUS_TYPES = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    413: RequestTooLarge,
}


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]  # where it was sent, not which field it is
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    return (f"{param}: {message}" if param else message), param


async def openai_error(request: Request, exc: Exception) -> Response:
    """Any exception that escaped a route, as OpenAI's error JSON: the one mapping, used by
    FastAPI's handlers and by the routes served directly (:mod:`proxy.direct`)."""
    if isinstance(exc, ProxyError):
        return error_response(exc)
    if isinstance(exc, RequestValidationError):
        message, param = _describe_validation_error(exc)
        return error_response(InvalidRequest(message, param=param, code="invalid_value"))
    if isinstance(exc, StarletteHTTPException):
        error_type = _STATUS_TYPES.get(exc.status_code, ProxyError)
        error = error_type(str(exc.detail), status_code=exc.status_code)
        if exc.status_code == 405:
            error.type, error.code = "invalid_request_error", "method_not_allowed"
        return error_response(error, headers=dict(exc.headers or {}))
    if isinstance(exc, IngestBehind):
        return error_response(MemoryWritesPending(str(exc), headers={"retry-after": "1"}))
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ProxyError("internal error in the proxy", code="internal_error"))


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception that can escape a route to OpenAI's error shape, once."""
    # Expected failures are named so that Starlette answers them in its exception middleware;
    # ``Exception`` lands in its server-error middleware, which also logs and re-raises it.
    expected = (ProxyError, RequestValidationError, StarletteHTTPException, IngestBehind)
    for handled in (*expected, Exception):
        app.add_exception_handler(handled, openai_error)
