"""Every other ``/v1`` endpoint, forwarded to the tenant's OpenAI-compatible upstream as is.

An app that changes only its base URL also calls what MemShadow adds nothing to: the
Responses API, legacy completions, moderations, images, audio, files, batches, and endpoints
that do not exist yet. Each is authenticated with the tenant key like any route, sent on with
the upstream's credentials (the body, query and content type untouched, so multipart uploads
pass too), and its answer streamed back as it arrives: JSON, server-sent events, audio bytes,
and errors with the upstream's own status. Memory is injected and captured in chat
completions and ``POST /v1/responses`` (``proxy.routes.chat``); ``GET /v1/responses/{id}``
and the rest come here, and the first poll that finds a background response done captures
its answer.

Registered after every other router, so it only sees paths nothing else serves; paths under
MemShadow's own APIs (a method they do not have, a typo) are answered here and never sent
on, since their bodies hold memories. A model served through LiteLLM (``anthropic/…``) has
no OpenAI wire format for these: a clear 400.
"""

from __future__ import annotations

import re

import orjson
from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from proxy.body import read_body
from proxy.errors import InvalidRequest, NotFound, ProxyError, RateLimited
from proxy.rate_limit import requests_per_minute
from proxy.services import get_services
from proxy.streaming import RelayResponse
from proxy.upstream import forwarded_request_headers

router = APIRouter()

_POLLED_RESPONSE = re.compile(r"responses/([^/]+)")
# The first path segments of MemShadow's own /v1 APIs.
_OWN = frozenset({"memories", "receipts", "feedback", "calibration"})


@router.api_route(
    "/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def forward(path: str, request: Request) -> Response:
    if path.split("/", 1)[0] in _OWN:
        raise _not_served(request, path)
    services = get_services(request)
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    try:  # model calls by another API count against the tenant's limit like chat's
        limit = requests_per_minute(services.settings.memory.policy, caller.tenant.policy)
        services.limiter.admit(caller.tenant.id, limit)
    except RateLimited:
        services.metrics.requests.labels("other", "429").inc()
        raise
    body = await read_body(request, services.settings.max_body_bytes)
    content_type = request.headers.get("content-type")
    payload = _json_object(body, content_type)
    model = payload.get("model") if payload is not None else None
    model = model if isinstance(model, str) else ""
    target = services.router.resolve(model, caller.tenant.upstream, caller.provider_key)
    if target.kind == "litellm":
        raise InvalidRequest(
            f"Model {model!r} is served through LiteLLM ({target.provider}), which MemShadow "
            "uses for chat completions, POST /v1/responses and embeddings only; "
            f"/v1/{path} needs a model on an OpenAI-compatible upstream.",
            param="model",
        )
    if payload is not None and model and target.model != model:  # a public name, renamed
        body = orjson.dumps({**payload, "model": target.model})
    query = request.url.query
    try:
        answer = await services.openai.relay(
            target,
            request.method,
            f"{path}?{query}" if query else path,
            body or None,
            forwarded_request_headers(request.headers),
            content_type,
        )
    except ProxyError as error:
        services.metrics.requests.labels("other", str(error.status_code)).inc()
        raise
    services.metrics.requests.labels("other", str(answer.status_code)).inc()
    observer = None
    polled = _POLLED_RESPONSE.fullmatch(path)
    if request.method == "GET" and polled and answer.status_code == 200:
        # A background response's answer arrives here, when the app polls for it.
        streamed = request.query_params.get("stream", "").lower() == "true"
        observer = services.chat_memory.background_answer(caller.tenant.id, polled[1], streamed)
    # Relayed as it arrives, and a client that goes away cancels the upstream call.
    content = answer.headers.pop("content-type", "application/octet-stream")
    return RelayResponse(answer, {}, observer, content_type=content)


def _not_served(request: Request, path: str) -> Exception:
    """405 where one of MemShadow's routes has the path (not the method), else 404."""
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is Match.PARTIAL:
            return HTTPException(405)
    return NotFound(f"MemShadow has no {request.method} /v1/{path}.")


def _json_object(body: bytes, content_type: str | None) -> dict[str, object] | None:
    """The body as a JSON object when it is one (else None: multipart, binary, a list)."""
    if not body or (content_type and "json" not in content_type):
        return None
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None
