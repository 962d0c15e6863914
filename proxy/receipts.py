"""What was injected into each completion, for ``GET /v1/receipts/{completion_id}``.

Kept in a bounded in-process LRU: receipts are a debugging and audit aid for recent
completions, and the feedback loop reads them to credit exactly the injected memories.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class InjectedMemory:
    id: str
    score: float
    tokens: int
    truncated: bool


@dataclass(slots=True)
class Receipt:
    request_id: str
    tenant: str
    user: str
    session: str | None
    status: str
    placement: str | None = None
    confidence: float | None = None
    # Before calibration: outcomes are binned by this, the scale calibration maps from.
    raw_confidence: float | None = None
    tokens: int = 0
    budget: int = 0
    memories: list[InjectedMemory] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    completion_id: str | None = None
    # Outcomes already credited, so feedback is idempotent per completion and memory.
    credited: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    # What was injected, kept to see whether the answer used it (never shown in the receipt).
    contents: dict[str, str] = field(default_factory=dict)
    # Implicit outcomes already applied, as (kind, memory id).
    signals: set[tuple[str, str]] = field(default_factory=set)
    # The key of the question recalled for, so feedback is also filed under it.
    question: str = ""

    @property
    def injected_ids(self) -> list[str]:
        return [m.id for m in self.memories]

    def to_public(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("tenant")
        body.pop("calibrated")
        body.pop("contents")
        body.pop("signals")
        body.pop("question")
        body["object"] = "memory.receipt"
        return body


class ReceiptStore:
    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._by_completion: OrderedDict[tuple[str, str], Receipt] = OrderedDict()

    def put(self, completion_id: str, receipt: Receipt) -> None:
        receipt.completion_id = completion_id
        key = (receipt.tenant, completion_id)
        self._by_completion[key] = receipt
        self._by_completion.move_to_end(key)
        while len(self._by_completion) > self._capacity:
            self._by_completion.popitem(last=False)

    def get(self, tenant: str, completion_id: str) -> Receipt | None:
        """Only the tenant that made the completion can see its receipt."""
        return self._by_completion.get((tenant, completion_id))
