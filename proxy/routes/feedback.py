"""``POST /v1/feedback`` and ``GET /v1/calibration``: outcomes in, calibration out."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.calibration import reliability
from policies.decision import PolicyInputError, tenant_policy
from proxy.body import json_body
from proxy.errors import InvalidRequest, MemoryUnavailable, NotFound
from proxy.receipts import credit_name, credit_once
from proxy.routes.memories import Context

router = APIRouter()
events = logging.getLogger("memshadow.events")


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=200)
    useful: bool | None = None
    score: float | None = Field(default=None, ge=-1, le=1)
    memory_ids: list[str] | None = None
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_outcome(self) -> FeedbackBody:
        if (self.useful is None) == (self.score is None):
            raise ValueError("give exactly one of useful (bool) or score (-1..1)")
        return self

    @property
    def value(self) -> float:
        return (1.0 if self.useful else -1.0) if self.useful is not None else float(self.score or 0)


@router.post("/v1/feedback")
async def feedback(
    context: Context, body: Annotated[FeedbackBody, Depends(json_body(FeedbackBody))]
) -> dict[str, Any]:
    """Credit exactly the memories injected into one completion; idempotent per memory."""
    services, tenant = context.services, context.id
    receipt = await services.receipts.get(tenant, body.completion_id)
    if receipt is None:
        raise NotFound(
            f"No completion {body.completion_id!r} with injected memories.", param="completion_id"
        )
    injected = receipt.injected_ids
    wanted = body.memory_ids if body.memory_ids is not None else injected
    foreign = sorted(set(wanted) - set(injected))
    if foreign:
        raise InvalidRequest(
            f"memory_ids were not injected into this completion: {', '.join(foreign)}",
            param="memory_ids",
        )
    if services.memories is None:
        raise MemoryUnavailable("The memory engine is not available on this server.")
    names = {credit_name(i): i for i in dict.fromkeys(wanted)}
    fresh = await credit_once(
        services.receipts, services.memories, receipt, names, body.value, repr(body.value)
    )
    raw = receipt.raw_confidence
    if (
        raw is not None
        and body.value != 0
        and await services.receipts.claim(receipt, {"calibrated": "1"})
    ):
        await services.calibration.record(tenant, raw, body.value > 0, abs(body.value))
    events.info(
        "feedback received: tenant=%s completion=%s value=%.2f memories=%d",
        tenant, body.completion_id, body.value, len(fresh),
        extra={"event": "feedback.received", "tenant": tenant, "kind": "explicit",
               "completion_id": body.completion_id, "value": body.value, "memory_ids": fresh},
    )  # fmt: skip
    services.metrics.feedback.labels("explicit").inc()
    return {
        "object": "feedback",
        "completion_id": body.completion_id,
        "credited": fresh,
        "already_recorded": [i for i in wanted if i not in fresh],
    }


@router.get("/v1/calibration")
async def calibration(context: Context) -> dict[str, Any]:
    """How well this tenant's confidence has predicted useful injections, and its threshold."""
    services, tenant = context.services, context.id
    book = services.calibration
    await book.refresh(tenant)  # what every replica has learned, not this one's snapshot
    base = services.settings.memory.policy
    try:
        policy = tenant_policy(base, context.caller.tenant.policy)
    except PolicyInputError:
        policy = base  # injection falls back the same way
    return {
        "object": "memory.calibration",
        "outcomes": book.of(tenant).outcomes,
        "expected_calibration_error": round(book.ece(tenant), 4),
        "threshold": book.threshold(tenant, policy),
        "target_precision": policy.target_precision,
        "bins": reliability(book.of(tenant)),
    }
