"""``GET /v1/models`` and ``POST /v1/embeddings``, passed through to the upstream."""

from __future__ import annotations

import time
from collections.abc import Awaitable

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy.body import read_body
from proxy.errors import ProxyError
from proxy.metrics import Metrics
from proxy.schemas import EmbeddingsRequest, parse_body
from proxy.services import get_services
from proxy.upstream import UpstreamReply, forwarded_request_headers

router = APIRouter()


async def _counted(metrics: Metrics, route: str, reply: Awaitable[UpstreamReply]) -> UpstreamReply:
    """The upstream's answer, counted in ``memshadow_requests`` like chat's (errors too)."""
    try:
        answer = await reply
    except ProxyError as error:
        metrics.requests.labels(route, str(error.status_code)).inc()
        raise
    metrics.requests.labels(route, str(answer.status_code)).inc()
    return answer


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The upstream's models plus the public names of the routing table."""
    services = get_services(request)
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    target = services.router.resolve("", caller.tenant.upstream, caller.provider_key)
    reply = await _counted(
        services.metrics,
        "models",
        services.openai.request(
            target, "GET", "models", headers=forwarded_request_headers(request.headers)
        ),
    )
    listing = orjson.loads(reply.body)
    known = {m.get("id") for m in listing.get("data", []) if isinstance(m, dict)}
    created = int(time.time())
    for name in services.router.public_models:
        if name not in known:
            listing.setdefault("data", []).append(
                {"id": name, "object": "model", "created": created, "owned_by": "memshadow"}
            )
    return Response(orjson.dumps(listing), headers=reply.headers, media_type="application/json")


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    services = get_services(request)
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    raw = await read_body(request, services.settings.max_body_bytes)
    embeddings = parse_body(EmbeddingsRequest, raw)
    target = services.router.resolve(embeddings.model, caller.tenant.upstream, caller.provider_key)
    if target.kind == "litellm":
        payload = orjson.loads(raw)
        payload.pop("model", None)
        reply = await _counted(
            services.metrics, "embeddings", services.litellm.embed(target, payload)
        )
    else:
        if target.model != embeddings.model:
            payload = orjson.loads(raw)
            payload["model"] = target.model
            raw = orjson.dumps(payload)
        reply = await _counted(
            services.metrics,
            "embeddings",
            services.openai.request(
                target, "POST", "embeddings", raw, forwarded_request_headers(request.headers)
            ),
        )
    return Response(reply.body, reply.status_code, reply.headers, media_type="application/json")
