"""Outcomes: per-tenant calibration of confidence, fed by explicit and implicit feedback.

Each tenant's reliability bins are totals in the shared state (one hash per tenant, every
outcome an atomic increment), so replicas add up what they learn instead of each learning
its own threshold. The hot path never waits for them: it reads a snapshot that every
outcome recorded here updates and a background loop refreshes every ``refresh_s``.
Outcomes recorded while the shared state is down are kept and added when it is back.

In a single process the totals are also saved as one small JSON file at shutdown (and
loaded at start), so a tenant's threshold keeps what it learned across restarts; with
Redis, Redis keeps them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import orjson

from policies.calibration import (
    BINS,
    Bin,
    Calibration,
    adapted_threshold,
    bin_of,
    calibrated,
    expected_calibration_error,
)
from policies.decision import MemoryPolicy
from proxy.errors import SharedStateUnavailable
from proxy.shared_state import SharedState

logger = logging.getLogger("memshadow.feedback")


def _key(tenant: str) -> str:
    return f"calibration:{tenant}"


def outcome_deltas(confidence: float, useful: bool, weight: float) -> dict[str, float]:
    """One outcome as increments of its bin's totals (``observe`` in policies.calibration)."""
    index = bin_of(confidence)
    return {
        f"{index}.count": weight,
        f"{index}.useful": weight if useful else 0.0,
        f"{index}.confidence": weight * confidence,
    }


def from_totals(totals: Mapping[str, float]) -> Calibration:
    return Calibration(
        tuple(
            Bin(
                totals.get(f"{i}.count", 0.0),
                totals.get(f"{i}.useful", 0.0),
                totals.get(f"{i}.confidence", 0.0),
            )
            for i in range(BINS)
        )
    )


def to_totals(calibration: Calibration) -> dict[str, float]:
    totals: dict[str, float] = {}
    for i, b in enumerate(calibration.bins):
        totals.update({f"{i}.count": b.count, f"{i}.useful": b.useful})
        totals[f"{i}.confidence"] = b.confidence_sum
    return totals


def _plus(totals: Mapping[str, float], deltas: Mapping[str, float]) -> dict[str, float]:
    out = dict(totals)
    for name, delta in deltas.items():
        out[name] = out.get(name, 0.0) + delta
    return out


class CalibrationBook:
    """Every tenant's calibration: shared totals, local snapshots for the hot path."""

    def __init__(
        self, shared: SharedState, path: Path | None = None, *, refresh_s: float = 5.0
    ) -> None:
        self._shared = shared
        self._path = path
        self._refresh_s = refresh_s
        self._snapshots: dict[str, dict[str, float]] = {}
        self._calibrations: dict[str, Calibration] = {}  # the snapshots, as the hot path reads them
        self._unflushed: dict[str, dict[str, float]] = {}
        # The threshold last applied per tenant (under that tenant's own policy), for /metrics.
        self._applied: dict[str, float] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._path is not None and self._path.is_file():
            await self._load(self._path)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="memshadow-calibration")

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        for tenant in list(self._unflushed):
            await self._flush(tenant)
        self.save()

    async def _load(self, path: Path) -> None:
        try:
            raw = orjson.loads(path.read_bytes())
            loaded = {t: Calibration(tuple(Bin(*row) for row in rows)) for t, rows in raw.items()}
        except (OSError, orjson.JSONDecodeError, TypeError) as error:
            logger.warning("calibration file unreadable (%s); starting fresh", error)
            return
        for tenant, calibration in loaded.items():
            self._set(tenant, await self._shared.add(_key(tenant), to_totals(calibration)))

    def save(self) -> None:
        if self._path is None:
            return
        rows = {
            tenant: [[b.count, b.useful, b.confidence_sum] for b in self.of(tenant).bins]
            for tenant in self._snapshots
        }
        temporary = self._path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(rows))
        temporary.replace(self._path)

    # -- outcomes in ----------------------------------------------------------------------
    async def record(
        self, tenant: str, confidence: float, useful: bool, weight: float = 1.0
    ) -> None:
        deltas = outcome_deltas(confidence, useful, weight)
        self._unflushed[tenant] = _plus(self._unflushed.get(tenant, {}), deltas)
        self._set(tenant, _plus(self._snapshots.get(tenant, {}), deltas))
        await self._flush(tenant)

    async def _flush(self, tenant: str) -> None:
        """Add this replica's unrecorded outcomes to the shared totals (kept if it is down)."""
        deltas = self._unflushed.pop(tenant, None)
        if not deltas:
            return
        try:
            self._set(tenant, await self._shared.add(_key(tenant), deltas))
        except SharedStateUnavailable:
            self._unflushed[tenant] = _plus(self._unflushed.get(tenant, {}), deltas)

    async def forget(self, tenant: str) -> None:
        """Drop the tenant's calibration, here and in the shared totals (a deleted tenant);
        raises :class:`SharedStateUnavailable` when the shared state is down."""
        self._unflushed.pop(tenant, None)
        self._snapshots.pop(tenant, None)
        self._calibrations.pop(tenant, None)
        self._applied.pop(tenant, None)
        fields = await self._shared.fields(_key(tenant))
        if fields:
            await self._shared.release(_key(tenant), list(fields))
        self.save()

    async def refresh(self, tenant: str) -> None:
        """Read the tenant's shared totals now (what the other replicas learned too)."""
        if tenant in self._unflushed:
            await self._flush(tenant)
        try:
            totals = await self._shared.fields(_key(tenant))
        except SharedStateUnavailable:
            return
        snapshot = {name: float(value) for name, value in totals.items()}
        self._set(tenant, _plus(snapshot, self._unflushed.get(tenant, {})))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            for tenant in list(self._snapshots):
                await self.refresh(tenant)

    def _set(self, tenant: str, totals: dict[str, float]) -> None:
        self._snapshots[tenant] = totals
        self._calibrations[tenant] = from_totals(totals)

    # -- calibration out (the hot path: snapshots only) ---------------------------------
    def of(self, tenant: str) -> Calibration:
        calibration = self._calibrations.get(tenant)
        if calibration is None:
            # First sight of the tenant here: the refresh loop fetches its shared totals.
            self._set(tenant, {})
            return self._calibrations[tenant]
        return calibration

    def confidence(self, tenant: str, raw: float) -> float:
        return calibrated(self.of(tenant), raw)

    def threshold(self, tenant: str, policy: MemoryPolicy) -> float:
        value = adapted_threshold(
            self.of(tenant), policy.target_precision, policy.confidence_threshold
        )
        self._applied[tenant] = value
        return value

    def applied_thresholds(self) -> dict[str, float]:
        return dict(self._applied)

    def ece(self, tenant: str) -> float:
        return expected_calibration_error(self.of(tenant))

    def tenants(self) -> list[str]:
        return sorted(t for t, snapshot in self._snapshots.items() if snapshot)
