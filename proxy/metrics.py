"""Prometheus metrics, on a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        # CPU, resident memory, open files and start time of this process (Linux /proc).
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "memshadow_requests",
            "Proxied requests by route and outcome.",
            ["route", "status"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "memshadow_upstream_seconds",
            "Time to the upstream's answer (first byte for streams).",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.memory_degraded = Counter(
            "memshadow_memory_degraded",
            "Chat requests forwarded without memory because the memory side failed.",
            ["reason"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "memshadow_feedback",
            "Outcomes received, by kind (explicit, regenerate, correction, usage).",
            ["kind"],
            registry=self.registry,
        )
        self.calibration_error = Gauge(
            "memshadow_calibration_error",
            "Expected calibration error of injection confidence, per tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.confidence_threshold = Gauge(
            "memshadow_confidence_threshold",
            "Current abstention threshold, per tenant (adapts toward the target precision).",
            ["tenant"],
            registry=self.registry,
        )
        self.abstained = Counter(
            "memshadow_injection_abstained",
            "Recalls whose confidence was below the tenant's threshold: nothing injected.",
            registry=self.registry,
        )
        self.recall_limit = Gauge(
            "memshadow_recall_concurrency_limit",
            "Recalls allowed in flight (adapts: grows while recalls beat the deadline).",
            registry=self.registry,
        )
        self.memory_status = Counter(
            "memshadow_memory_status",
            "Chat requests by memory outcome (ok, abstained, off, degraded).",
            ["status"],
            registry=self.registry,
        )
        self.shared_state_up = Gauge(
            "memshadow_shared_state_up",
            "1 while the shared state (Redis) answers and its broadcasts reach this replica.",
            registry=self.registry,
        )
        self.shared_state_errors = Counter(
            "memshadow_shared_state_errors",
            "Shared-state (Redis) operations that failed, by operation.",
            ["op"],
            registry=self.registry,
        )
        self.ingest_fallback = Counter(
            "memshadow_ingest_fallback",
            "Memories acknowledged in this replica's write-ahead log because the shared"
            " ingestion stream (Redis) was unavailable.",
            registry=self.registry,
        )
        # What waits behind a chat request's answer (the dashboard shows the same): an operator
        # alerts when these grow, long before anyone notices memories arriving late.
        self.capture_queue = Gauge(
            "memshadow_capture_queue",
            "Finished exchanges (and turn signals) waiting to be captured.",
            registry=self.registry,
        )
        self.capture_dropped = Counter(
            "memshadow_capture_dropped",
            "Exchanges not captured because the capture queue was full.",
            registry=self.registry,
        )
        self.ingest_backlog = Gauge(
            "memshadow_ingest_backlog",
            "Memories acknowledged (durable) but not yet applied to the store, so not yet"
            " searchable.",
            registry=self.registry,
        )
        self.scope_cache_rows = Gauge(
            "memshadow_scope_cache_rows",
            "Memories held in RAM search structures (cached scopes), up to the cache's bound.",
            registry=self.registry,
        )
        self.ingest_writer_tenants = Gauge(
            "memshadow_ingest_writer_tenants",
            "Tenants whose shared ingestion stream this replica applies (holds the lease of).",
            registry=self.registry,
        )
