"""``GET /v1/receipts/{completion_id}``: what memory did for one completion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from proxy.errors import NotFound
from proxy.services import get_services

router = APIRouter()


@router.get("/v1/receipts/{completion_id}")
async def get_receipt(completion_id: str, request: Request) -> dict[str, Any]:
    services = get_services(request)
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    receipt = await services.receipts.public(caller.tenant.id, completion_id)
    if receipt is None:
        raise NotFound(f"No receipt for completion {completion_id!r}.", param="completion_id")
    return receipt
