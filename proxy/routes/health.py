"""Liveness, readiness and metrics for orchestrators and operators."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from proxy.services import Services, get_services

router = APIRouter()
_READY_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> Response:
    """Liveness: the process answers. Says nothing about dependencies (that is /ready)."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def _check_store(services: Services) -> str:
    await asyncio.wait_for(asyncio.to_thread(services.registry.list_tenants), _READY_TIMEOUT_S)
    return "ok"


async def _check_upstream(services: Services) -> str:
    """Reachable means it answers HTTP at all; a 401 from the provider still counts."""
    target = services.router.resolve("")
    try:
        await services.openai.probe(target, timeout_s=_READY_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


@router.get("/ready")
async def ready(request: Request) -> Response:
    services = get_services(request)
    checks: dict[str, str] = {}
    try:
        checks["store"] = await _check_store(services)
    except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
        checks["store"] = f"failing: {type(exc).__name__}"
    checks["upstream"] = await _check_upstream(services)
    if all(value == "ok" for value in checks.values()):
        return Response(
            orjson.dumps({"status": "ready", "checks": checks}), media_type="application/json"
        )
    body = {
        "error": {
            "message": "not ready: "
            + ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok"),
            "type": "server_error",
            "param": None,
            "code": "not_ready",
        },
        "checks": checks,
    }
    return Response(orjson.dumps(body), status_code=503, media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services = get_services(request)
    book, metrics = services.calibration, services.metrics
    # Calibration gauges are computed on scrape: cheap, and never stale.
    for tenant in book.tenants():
        metrics.calibration_error.labels(tenant).set(book.ece(tenant))
    for tenant, threshold in book.applied_thresholds().items():
        metrics.confidence_threshold.labels(tenant).set(threshold)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
