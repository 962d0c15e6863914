"""What was injected into each completion, for ``GET /v1/receipts/{completion_id}``.

Receipts are a debugging and audit aid for recent completions, and the feedback loop reads
them to credit exactly the injected memories. Each lives in the shared state as one hash
per completion (so any replica can answer for it): the receipt itself, plus one field per
outcome already recorded (``credit:<memory id>``, ``signal:<kind>:<memory id>``,
``calibrated``), claimed atomically, so feedback sent through any number of replicas counts
once. A receipt is written after the completion's id is seen, off the request path; until
the write lands, this replica answers for it from memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import SharedStateUnavailable
from proxy.shared_state import SharedState

if TYPE_CHECKING:
    from memory.service import MemoryService

logger = logging.getLogger("memshadow.receipts")
_RECEIPT_FIELD = "receipt"
_CREDIT = "credit:"


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
    # What was injected, to see whether the answer used it: kept by the replica that served
    # the completion only, never stored or shown (a forgotten memory must not linger here).
    contents: dict[str, str] = field(default_factory=dict)
    # The key of the question recalled for (a hash of its terms, never its text), so
    # feedback is also filed under it (memory.outcomes).
    question: str = ""

    @property
    def injected_ids(self) -> list[str]:
        return [m.id for m in self.memories]

    def to_json(self) -> str:
        # orjson serialises the dataclasses itself: asdict()'s recursive copy cost more CPU
        # than the rest of a proxied request (every completion writes its receipt).
        return orjson.dumps({name: getattr(self, name) for name in _STORED}).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Receipt:
        body = orjson.loads(raw)
        body["memories"] = [InjectedMemory(**m) for m in body.get("memories") or []]
        # Replicas of two versions may share Redis during a rolling upgrade: fields this
        # version does not know are ignored.
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in body.items() if name in known})

    def to_public(self, credited: Mapping[str, float]) -> dict[str, Any]:
        body = asdict(self)
        body.pop("tenant")
        body.pop("contents")
        body.pop("question")
        body["credited"] = dict(credited)
        body["object"] = "memory.receipt"
        return body


# What the shared state keeps of a receipt: all but the injected contents.
_STORED = tuple(f.name for f in fields(Receipt) if f.name != "contents")


def _key(tenant: str, completion_id: str) -> str:
    return "receipt:" + orjson.dumps([tenant, completion_id]).decode()


class ReceiptStore:
    """Receipts and their recorded outcomes, in the shared state for ``ttl_s``."""

    def __init__(self, shared: SharedState, *, ttl_s: float = 7 * 86400.0) -> None:
        self._shared = shared
        self._ttl_s = ttl_s
        self._pending: dict[tuple[str, str], Receipt] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def put(self, completion_id: str, receipt: Receipt) -> None:
        """Keep the receipt of a completion (called from the response path: no waiting)."""
        receipt.completion_id = completion_id
        self._pending[(receipt.tenant, completion_id)] = receipt
        task = asyncio.ensure_future(self._write(receipt, completion_id))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, receipt: Receipt, completion_id: str) -> None:
        try:
            fields = {_RECEIPT_FIELD: receipt.to_json()}
            await self._shared.claim(_key(receipt.tenant, completion_id), fields, self._ttl_s)
        except SharedStateUnavailable:
            logger.debug("receipt of %s not kept: the shared state is down", completion_id)
        finally:
            if self._pending.get((receipt.tenant, completion_id)) is receipt:
                del self._pending[(receipt.tenant, completion_id)]

    async def aclose(self) -> None:
        """Finish the writes in flight (shutdown)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _fields(
        self, tenant: str, completion_id: str
    ) -> tuple[Receipt | None, dict[str, str]]:
        fields = await self._shared.fields(_key(tenant, completion_id))
        pending = self._pending.get((tenant, completion_id))
        if pending is not None:
            return pending, fields
        raw = fields.get(_RECEIPT_FIELD)
        return (Receipt.from_json(raw) if raw is not None else None), fields

    async def get(self, tenant: str, completion_id: str) -> Receipt | None:
        """Only the tenant that made the completion can see its receipt."""
        pending = self._pending.get((tenant, completion_id))
        if pending is not None:
            return pending
        return (await self._fields(tenant, completion_id))[0]

    async def public(self, tenant: str, completion_id: str) -> dict[str, Any] | None:
        """The receipt as ``GET /v1/receipts`` shows it, with the credits recorded so far."""
        receipt, fields = await self._fields(tenant, completion_id)
        if receipt is None:
            return None
        credited = {
            name.removeprefix(_CREDIT): float(value)
            for name, value in fields.items()
            if name.startswith(_CREDIT)
        }
        return receipt.to_public(credited)

    async def claim(self, receipt: Receipt, outcomes: Mapping[str, str]) -> list[str]:
        """Record outcomes (name → value) of this completion not recorded yet; the names
        this call recorded. Exactly one claim wins each name, through any replica."""
        if receipt.completion_id is None or not outcomes:
            return []
        key = _key(receipt.tenant, receipt.completion_id)
        return await self._shared.claim(key, outcomes, self._ttl_s)

    async def release(self, receipt: Receipt, names: Sequence[str]) -> None:
        """Give claimed outcomes back (the work they stood for failed)."""
        if receipt.completion_id is not None:
            await self._shared.release(_key(receipt.tenant, receipt.completion_id), names)


def credit_name(memory_id: str) -> str:
    return _CREDIT + memory_id


async def credit_once(
    receipts: ReceiptStore,
    memories: MemoryService,
    receipt: Receipt,
    names: Mapping[str, str],
    value: float,
    mark: str,
) -> list[str]:
    """Credit ``value`` to the memories whose outcome (``names``: outcome name → memory id)
    this call is the first to claim, through any replica; the ids it credited. A claim is
    given back when crediting fails, so a retry can still count."""
    won = await receipts.claim(receipt, dict.fromkeys(names, mark))
    fresh = [names[name] for name in won]
    if not fresh:
        return fresh
    try:
        await memories.record_usefulness(
            receipt.tenant, fresh, value, user=receipt.user, question=receipt.question
        )
    except BaseException:
        await receipts.release(receipt, won)
        raise
    return fresh
