"""``POST /v1/chat/completions`` and ``POST /v1/responses``: authenticate, inject memory,
forward, relay, capture.

The two APIs differ only in how a conversation and an answer are written (``proxy.wire``).
A model routed through LiteLLM gets either API in OpenAI's format (LiteLLM translates the
Responses API to the provider's own; it keeps no stored responses, so nothing chains).
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy.body import read_body
from proxy.disconnect import cancelled_on_disconnect
from proxy.errors import ProxyError, RateLimited, UpstreamError
from proxy.pipeline import ChatContext, Injection
from proxy.rate_limit import requests_per_minute
from proxy.routing import Target
from proxy.schemas import ChatCompletionRequest, ModelRequest, ResponsesRequest, parse_body
from proxy.services import Services, get_services
from proxy.streaming import RelayResponse
from proxy.upstream import UpstreamReply, UpstreamStream, forwarded_request_headers
from proxy.wire import CHAT, RESPONSES, Wire

router = APIRouter()


def _outgoing_body(raw: bytes, target: Target, call: ModelRequest) -> bytes:
    """The original bytes unless routing renamed the model (no re-serialising on the hot path)."""
    if target.model == call.model:
        return raw
    payload = orjson.loads(raw)
    payload["model"] = target.model
    return orjson.dumps(payload)


async def _forward(
    services: Services, target: Target, wire: Wire, body: bytes, request: Request, stream: bool
) -> UpstreamReply | UpstreamStream:
    if target.kind == "litellm":
        payload = orjson.loads(body)
        payload.pop("model", None)
        if stream:
            return await services.litellm.stream(target, payload, wire.path)
        return await services.litellm.complete(target, payload, wire.path)
    headers = forwarded_request_headers(request.headers)
    if stream:
        return await services.openai.stream(target, wire.path, body, headers)
    return await services.openai.request(target, "POST", wire.path, body, headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _answer_with_memory(request, CHAT, ChatCompletionRequest)


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    return await _answer_with_memory(request, RESPONSES, ResponsesRequest)


async def _answer_with_memory(request: Request, wire: Wire, schema: type[ModelRequest]) -> Response:
    services = get_services(request)
    metrics = services.metrics
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    try:
        limit = requests_per_minute(services.settings.memory.policy, caller.tenant.policy)
        services.limiter.admit(caller.tenant.id, limit)
    except RateLimited:
        metrics.requests.labels(wire.name, "429").inc()
        raise
    raw = await read_body(request, services.settings.max_body_bytes)
    call = parse_body(schema, raw)
    target = services.router.resolve(call.model, caller.tenant.upstream, caller.provider_key)
    context = ChatContext(
        request.state.request_id, caller, wire, call, raw, request.headers, target
    )
    injection: Injection = await services.chat_memory.inject(context)
    started = time.perf_counter()
    answer: UpstreamReply | UpstreamStream | None = None
    try:
        async with cancelled_on_disconnect(request.receive):
            sent = _outgoing_body(injection.body or raw, target, call)
            try:
                answer = await _forward(services, target, wire, sent, request, call.stream)
            except UpstreamError as error:
                if injection.body is None or not error.overflows_context:
                    raise
                # The block took the request past the model's window (the turns of a chained
                # response are not in the body to count; a tokenizer counts differently):
                # memory must not fail it, so it goes as the app wrote it.
                injection = services.chat_memory.withdraw(injection, "context_length")
                sent = _outgoing_body(raw, target, call)
                answer = await _forward(services, target, wire, sent, request, call.stream)
    except ProxyError as error:
        metrics.memory_status.labels(injection.status).inc()
        metrics.requests.labels(wire.name, str(error.status_code)).inc()
        error.headers.update(injection.receipt_headers())
        services.chat_memory.observe(context, injection).on_end(False)
        raise
    metrics.memory_status.labels(injection.status).inc()
    observer = services.chat_memory.observe(context, injection)
    if answer is None:  # the client hung up before the upstream answered
        metrics.requests.labels(wire.name, "499").inc()
        observer.on_end(False)
        return Response(status_code=499)
    metrics.upstream_seconds.labels(target.kind).observe(time.perf_counter() - started)
    metrics.requests.labels(wire.name, str(answer.status_code)).inc()
    headers = {**answer.headers, **injection.receipt_headers()}
    if isinstance(answer, UpstreamStream):
        return RelayResponse(answer, headers, observer)
    observer.on_chunk(answer.body)
    observer.on_end(True)
    return Response(answer.body, answer.status_code, headers, media_type="application/json")
