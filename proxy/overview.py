"""The operator's overview: figures this process really has, for ``GET /admin/overview``
and the ``GET /dashboard`` page rendered from the same data.

What is shown, and why an operator of a multi-tenant memory proxy wants it:

- **Server**: version, uptime and resident memory (Linux ``/proc``, through
  prometheus_client's process collector; absent elsewhere), the default upstream's base URL
  (credentials, query and fragment removed), memory on or plain-proxy mode and why (disabled
  by setting, or the engine failed to start), whether Redis is configured (its URL without
  credentials; configured is all that is claimed, this page does not probe it), the auth
  mode and how many model routes are configured.
- **Traffic since start**, read from the app's own Prometheus collectors so the page always
  agrees with ``/metrics``: chat requests by HTTP status, memory outcomes (ok, abstained,
  off, degraded) with their shares, why memory degraded, feedback by kind, the adaptive
  recall concurrency limit against its ceiling, and upstream latency per kind of upstream
  (count and exact mean; p50 and p95 estimated from the histogram buckets the way
  Prometheus's ``histogram_quantile`` does).
- **Ingestion backlog**: exchanges waiting in the capture queue, exchanges dropped because it
  was full, and memories acknowledged (durable in the write-ahead log) but not yet applied.
- **Per tenant**: name, created, keys active/revoked/expired with the hints of active ones,
  live memories per tier (one cheap count per tier in the store), calibration (outcomes,
  expected calibration error, the threshold now applied against the configured one), which
  policy fields it overrides (and whether that policy is invalid, since injection then
  silently uses the default), and whether it brings its own upstream.

Deliberately not shown: memory contents and per-user figures (what users said and who they
are is the tenant's business, and a tenant may have millions of users); keys, key hashes and
any upstream or provider key (secrets: only whether one is set); policy values and the
reliability bins (one tenant's detail: ``GET /admin/tenants`` and ``GET /v1/calibration``);
other replicas' traffic (counters are per process: each replica's page shows its own).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from urllib.parse import urlsplit

from prometheus_client import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from pydantic import BaseModel, ConfigDict

from memory.model import Tier
from memory.service import MemoryService
from policies.calibration import adapted_threshold
from policies.decision import MemoryPolicy, PolicyInputError, tenant_policy
from proxy.feedback import CalibrationBook
from proxy.keys import KeyRecord, Tenant
from proxy.metrics import Metrics
from proxy.services import Services

logger = logging.getLogger("memshadow.overview")
MEMORY_STATUSES = ("ok", "abstained", "off", "degraded")


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True)


class MemoryMode(_Figures):
    enabled: bool
    reason: str


class Server(_Figures):
    version: str
    started_at: datetime | None
    uptime_s: float | None
    resident_memory_bytes: int | None
    upstream_base_url: str
    memory: MemoryMode
    redis_url: str | None
    # Whether Redis answers and its broadcasts reach this replica (None without Redis).
    redis_up: bool | None
    auth_mode: str
    model_routes: int


class Latency(_Figures):
    kind: str
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class RecallLimit(_Figures):
    current: int
    ceiling: int


class Traffic(_Figures):
    chat_requests: dict[str, int]
    responses_requests: dict[str, int]
    memory_status: dict[str, int]
    memory_status_share: dict[str, float]
    degraded_reasons: dict[str, int]
    feedback: dict[str, int]
    recall_concurrency: RecallLimit | None
    upstream_latency: list[Latency]


class Ingestion(_Figures):
    capture_queue: int
    capture_dropped: int
    write_backlog: int


class Keys(_Figures):
    active: int
    revoked: int
    expired: int
    active_hints: list[str]


class TenantCalibration(_Figures):
    outcomes: float
    expected_calibration_error: float
    threshold: float
    configured_threshold: float
    target_precision: float


class TenantFigures(_Figures):
    name: str
    created_at: datetime
    keys: Keys
    memories: dict[str, int] | None  # per tier; None when memory is off or the count failed
    memories_total: int | None
    calibration: TenantCalibration
    policy_overrides: list[str]
    policy_error: str | None
    upstream_base_url: str | None
    upstream_key_set: bool


class Overview(_Figures):
    """Everything the dashboard shows, as ``GET /admin/overview`` returns it."""

    object: str = "memshadow.overview"
    generated_at: datetime
    server: Server
    traffic: Traffic
    ingestion: Ingestion | None
    tenants: list[TenantFigures]


# -- pure pieces ---------------------------------------------------------------------------
def public_url(url: str) -> str:
    """The URL without user, password, query or fragment: safe to show to an operator."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _samples(collector: Collector, suffix: str = "") -> list[Sample]:
    """The collector's samples named after its family plus ``suffix`` (``_total``…)."""
    return [
        sample
        for family in collector.collect()
        for sample in family.samples
        if sample.name == family.name + suffix
    ]


def counts_by(counter: Collector, label: str, **where: str) -> dict[str, int]:
    """A counter's totals by one label, over the samples matching ``where``."""
    out: dict[str, int] = {}
    for sample in _samples(counter, "_total"):
        if all(sample.labels.get(k) == v for k, v in where.items()):
            key = sample.labels[label]
            out[key] = out.get(key, 0) + int(sample.value)
    return dict(sorted(out.items()))


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket holding
    the q-th observation. ``buckets`` are (upper bound, cumulative count), ascending, the
    last one +Inf; past the last finite bound, that bound is all that is known."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def latencies(histogram: Collector) -> list[Latency]:
    """Per ``kind`` label: count, mean and estimated p50/p95 of a histogram in seconds."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for sample in _samples(histogram, "_bucket"):
        buckets.setdefault(sample.labels["kind"], []).append(
            (float(sample.labels["le"]), sample.value)
        )
    sums = {s.labels["kind"]: s.value for s in _samples(histogram, "_sum")}
    out = []
    for kind, rows in sorted(buckets.items()):
        rows.sort()
        count = rows[-1][1]
        if count:
            out.append(Latency(
                kind=kind, count=int(count), mean_ms=round(1000 * sums[kind] / count, 2),
                p50_ms=round(1000 * bucket_quantile(0.5, rows), 2),
                p95_ms=round(1000 * bucket_quantile(0.95, rows), 2),
            ))  # fmt: skip
    return out


def traffic(metrics: Metrics, recall_ceiling: int | None) -> Traffic:
    statuses = counts_by(metrics.memory_status, "status")
    total = sum(statuses.values())
    limit = None
    if recall_ceiling is not None:
        # The limit starts at its ceiling; the gauge is first set when a recall finishes.
        current = int(_samples(metrics.recall_limit)[0].value)
        limit = RecallLimit(current=current or recall_ceiling, ceiling=recall_ceiling)
    return Traffic(
        chat_requests=counts_by(metrics.requests, "status", route="chat"),
        responses_requests=counts_by(metrics.requests, "status", route="responses"),
        memory_status={s: statuses.get(s, 0) for s in MEMORY_STATUSES},
        memory_status_share={
            s: round(statuses.get(s, 0) / total, 4) if total else 0.0 for s in MEMORY_STATUSES
        },
        degraded_reasons=counts_by(metrics.memory_degraded, "reason"),
        feedback=counts_by(metrics.feedback, "kind"),
        recall_concurrency=limit,
        upstream_latency=latencies(metrics.upstream_seconds),
    )


def key_figures(records: Iterable[KeyRecord], now: datetime) -> dict[str, Keys]:
    """Per tenant: keys revoked, expired (and not revoked) and active; hints of active ones."""
    tally: dict[str, dict[str, int]] = {}
    hints: dict[str, list[str]] = {}
    for record in records:
        counts = tally.setdefault(record.tenant, {"active": 0, "revoked": 0, "expired": 0})
        hints.setdefault(record.tenant, [])
        if record.revoked_at is not None:
            counts["revoked"] += 1
        elif not record.usable_at(now):
            counts["expired"] += 1
        else:
            counts["active"] += 1
            hints[record.tenant].append(record.hint)
    return {t: Keys(**counts, active_hints=hints[t]) for t, counts in tally.items()}


def tenant_figures(
    tenant: Tenant,
    keys: Keys | None,
    memories: Mapping[Tier, int] | None,
    calibration: CalibrationBook,
    base_policy: MemoryPolicy,
) -> TenantFigures:
    policy_error = None
    try:
        policy = tenant_policy(base_policy, tenant.policy)
    except PolicyInputError as error:
        policy, policy_error = base_policy, str(error)  # injection falls back the same way
    book = calibration.of(tenant.id)
    upstream = tenant.upstream
    per_tier = None if memories is None else {t.value: memories.get(t, 0) for t in Tier}
    return TenantFigures(
        name=tenant.id,
        created_at=tenant.created_at,
        keys=keys or Keys(active=0, revoked=0, expired=0, active_hints=[]),
        memories=per_tier,
        memories_total=None if per_tier is None else sum(per_tier.values()),
        calibration=TenantCalibration(
            outcomes=round(book.outcomes, 2),
            expected_calibration_error=round(calibration.ece(tenant.id), 4),
            threshold=adapted_threshold(book, policy.target_precision, policy.confidence_threshold),
            configured_threshold=policy.confidence_threshold,
            target_precision=policy.target_precision,
        ),
        policy_overrides=sorted(tenant.policy),
        policy_error=policy_error,
        upstream_base_url=public_url(upstream.base_url) if upstream.base_url else None,
        upstream_key_set=upstream.api_key is not None or bool(upstream.provider_keys),
    )


# -- gathering (I/O) -----------------------------------------------------------------------
def _version() -> str:
    try:
        return metadata.version("memshadow")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _process() -> dict[str, float]:
    """Start time and resident memory from ``/proc`` (empty where there is none)."""
    wanted = ("process_start_time_seconds", "process_resident_memory_bytes")
    return {
        s.name: s.value
        for family in ProcessCollector(registry=None).collect()
        for s in family.samples
        if s.name in wanted
    }


def _redis_up(services: Services) -> bool:
    up = services.metrics.registry.get_sample_value("memshadow_shared_state_up")
    return up == 1.0


def memory_mode(services: Services) -> MemoryMode:
    if not services.settings.memory.enabled:
        return MemoryMode(
            enabled=False, reason="plain proxy: disabled by setting (MEMSHADOW_MEMORY__ENABLED)"
        )
    if services.memories is None:
        return MemoryMode(
            enabled=False, reason="plain proxy: the memory engine failed to start (see the log)"
        )
    return MemoryMode(enabled=True, reason="memory on")


def server(services: Services) -> Server:
    settings = services.settings
    process = _process()
    started = process.get("process_start_time_seconds")
    rss = process.get("process_resident_memory_bytes")
    return Server(
        version=_version(),
        started_at=datetime.fromtimestamp(started, UTC) if started else None,
        uptime_s=round(time.time() - started, 1) if started else None,
        resident_memory_bytes=int(rss) if rss else None,
        upstream_base_url=public_url(settings.upstream_base_url),
        memory=memory_mode(services),
        redis_url=public_url(settings.redis_url) if settings.redis_url else None,
        redis_up=_redis_up(services) if settings.redis_url else None,
        auth_mode=settings.auth_mode,
        model_routes=len(settings.model_list),
    )


async def _count(memories: MemoryService, tenant: str) -> dict[Tier, int] | None:
    try:
        return await memories.count_live(tenant)
    except (OSError, RuntimeError, ValueError) as error:  # e.g. a table of another model
        logger.warning("overview: memories of tenant %s not counted: %s", tenant, error)
        return None


async def gather_overview(services: Services) -> Overview:
    """Read every figure once; the registry and the store are read off the event loop."""
    now = datetime.now(UTC)
    registry, memories = services.registry, services.memories
    tenants, records = await asyncio.gather(
        asyncio.to_thread(registry.list_tenants), asyncio.to_thread(registry.list_keys)
    )
    counts: list[dict[Tier, int] | None] = [None] * len(tenants)
    if memories is not None:
        counts = await asyncio.gather(*(_count(memories, t.id) for t in tenants))
    keys = key_figures(records, now)
    policy = services.settings.memory.policy
    capture = services.capture
    return Overview(
        generated_at=now,
        server=server(services),
        traffic=traffic(
            services.metrics,
            services.settings.memory.max_concurrent_recalls if memories is not None else None,
        ),
        ingestion=None
        if memories is None or capture is None
        else Ingestion(
            capture_queue=capture.depth,
            capture_dropped=capture.dropped,
            write_backlog=memories.ingest_backlog,
        ),
        tenants=[
            tenant_figures(t, keys.get(t.id), c, services.calibration, policy)
            for t, c in zip(tenants, counts, strict=True)
        ],
    )
