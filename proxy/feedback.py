"""Outcomes: per-tenant calibration of confidence, fed by explicit and implicit feedback.

Calibrations live in memory and are saved as one small JSON file per deployment at shutdown
(and loaded at start), so a tenant's threshold keeps what it learned across restarts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from policies.calibration import (
    Bin,
    Calibration,
    adapted_threshold,
    calibrated,
    expected_calibration_error,
    observe,
)
from policies.decision import MemoryPolicy

logger = logging.getLogger("memshadow.feedback")


class CalibrationBook:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._tenants: dict[str, Calibration] = {}
        # The threshold last applied per tenant (under that tenant's own policy), for /metrics.
        self._applied: dict[str, float] = {}
        if path is not None and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = orjson.loads(path.read_bytes())
            self._tenants = {
                tenant: Calibration(tuple(Bin(*row) for row in rows))
                for tenant, rows in raw.items()
            }
        except (OSError, orjson.JSONDecodeError, TypeError) as error:
            logger.warning("calibration file unreadable (%s); starting fresh", error)

    def save(self) -> None:
        if self._path is None:
            return
        rows = {
            tenant: [[b.count, b.useful, b.confidence_sum] for b in calibration.bins]
            for tenant, calibration in self._tenants.items()
        }
        temporary = self._path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(rows))
        temporary.replace(self._path)

    def of(self, tenant: str) -> Calibration:
        return self._tenants.get(tenant) or Calibration()

    def record(self, tenant: str, confidence: float, useful: bool, weight: float = 1.0) -> None:
        self._tenants[tenant] = observe(self.of(tenant), confidence, useful, weight)

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
        return sorted(self._tenants)
