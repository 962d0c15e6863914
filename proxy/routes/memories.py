"""The memory API: ``/v1/memories`` store, search, list, get, update, forget, export, import.

Every route is scoped to the caller's tenant; a user is taken from the body or query, else
``X-Memory-User``, else ``default`` (as in chat). An id that belongs to another tenant or
user is a 404, never its data.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import StreamingResponse

from memory.model import InvalidMemory, Memory, Scope, Tier
from memory.service import MemoryService
from proxy.auth import Caller
from proxy.body import json_body, read_body
from proxy.errors import InvalidRequest, MemoryUnavailable, NotFound
from proxy.services import Services, get_services
from proxy.summarize import summarize_memories

router = APIRouter(prefix="/v1/memories")
events = logging.getLogger("memshadow.events")


@dataclass(frozen=True, slots=True)
class Tenant:
    """What a memory route needs: the service, the caller and the default user."""

    services: Services
    caller: Caller
    header_user: str | None

    @property
    def id(self) -> str:
        return self.caller.tenant.id

    @property
    def memories(self) -> MemoryService:
        if self.services.memories is None:
            raise MemoryUnavailable("The memory engine is not available on this server.")
        return self.services.memories

    def user(self, explicit: str | None) -> str:
        return explicit or self.header_user or "default"

    def scope(self, user: str | None, session: str | None = None) -> Scope:
        return Scope(tenant=self.id, user=self.user(user), session=session)


async def tenant_context(request: Request) -> Tenant:
    services = get_services(request)
    caller = await services.auth.authenticate(request.headers.get("authorization"))
    return Tenant(
        services=services, caller=caller, header_user=request.headers.get("x-memory-user")
    )


Context = Annotated[Tenant, Depends(tenant_context)]


def public(memory: Memory) -> dict[str, Any]:
    return memory.model_dump(mode="json", exclude={"tenant"})


def _bad(error: InvalidMemory) -> InvalidRequest:
    return InvalidRequest(str(error), param=error.field, code="invalid_value")


class StoreBody(BaseModel):
    """``{"user"?, "session"?, "items": [...]}``, or one item's fields at the top level."""

    model_config = ConfigDict(extra="allow")

    user: str | None = None
    session: str | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _single_item(self) -> StoreBody:
        extra = dict(self.model_extra or {})
        if not self.items and "content" in extra:
            self.items = [extra]
        elif not self.items:
            raise ValueError("give items, or one item's content at the top level")
        return self


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    user: str | None = None
    session: str | None = None
    k: int = Field(default=8, ge=1, le=100)
    max_tokens: int | None = Field(default=None, ge=1)
    tier: Tier | None = None


class PatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    metadata: dict[str, Any] | None = None
    tier: Tier | None = None


class SummarizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    user: str | None = None
    session: str | None = None


@router.post("", status_code=201)
async def store(
    tenant: Context, body: Annotated[StoreBody, Depends(json_body(StoreBody))]
) -> dict[str, Any]:
    try:
        stored = await tenant.memories.store(tenant.scope(body.user, body.session), body.items)
    except InvalidMemory as error:
        raise _bad(error) from None
    events.info(
        "memory stored: tenant=%s source=api count=%d", tenant.id, len(stored),
        extra={"event": "memory.stored", "tenant": tenant.id, "source": "api",
               "memory_ids": [m.id for m in stored]},
    )  # fmt: skip
    return {"object": "list", "data": [public(m) for m in stored]}


@router.post("/search")
async def search(
    tenant: Context, body: Annotated[SearchBody, Depends(json_body(SearchBody))]
) -> dict[str, Any]:
    tiers = [body.tier] if body.tier else None
    try:
        result = await tenant.memories.search(
            tenant.scope(body.user, body.session), body.query, k=body.k,
            max_tokens=body.max_tokens, tiers=tiers,
        )  # fmt: skip
    except InvalidMemory as error:
        raise _bad(error) from None
    data = [
        {
            **public(r.memory),
            "score": r.score,
            "components": {
                "vector": r.vector,
                "keyword": r.keyword,
                "recency": r.recency,
                "usefulness": r.usefulness,
            },
        }
        for r in result.items
    ]
    return {"object": "list", "data": data, "confidence": result.confidence}


@router.get("")
async def list_memories(
    tenant: Context,
    user: str | None = None,
    session: str | None = None,
    tier: Tier | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    try:
        items, next_cursor = await tenant.memories.list_memories(
            tenant.id, user=user or tenant.header_user, session=session, tier=tier, cursor=cursor,
            limit=limit,
        )  # fmt: skip
    except InvalidMemory as error:
        raise _bad(error) from None
    return {
        "object": "list",
        "data": [public(m) for m in items],
        "next_cursor": next_cursor,
        "has_more": next_cursor is not None,
    }


@router.delete("")
async def forget(tenant: Context, user: str, session: str | None = None) -> dict[str, Any]:
    """Forget a user (or one of their sessions): gone from search at once."""
    try:
        if session is None:
            removed = await tenant.memories.forget_user(tenant.id, user)
        else:
            removed = await tenant.memories.forget_session(tenant.id, user, session)
    except InvalidMemory as error:
        raise _bad(error) from None
    return {"object": "memory.forget", "user": user, "session": session, "deleted": removed}


@router.get("/export")
async def export(
    tenant: Context, user: str | None = None, include_vectors: bool = False
) -> StreamingResponse:
    """JSONL, one memory per line; ``include_vectors`` adds the embeddings."""
    memories = tenant.memories

    async def lines() -> AsyncIterator[bytes]:
        async for record in memories.export(tenant.id, user=user, include_vectors=include_vectors):
            yield orjson.dumps(record) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/import")
async def import_memories(request: Request, tenant: Context) -> dict[str, Any]:
    """JSONL (as exported) or a JSON array of records; re-embedded when the model differs."""
    raw = await read_body(request, tenant.services.settings.max_body_bytes)
    try:
        records = _parse_records(raw)
        imported = await tenant.memories.import_(tenant.id, records)
    except InvalidMemory as error:
        raise _bad(error) from None
    return {"object": "memory.import", "imported": imported}


def _parse_records(raw: bytes) -> list[dict[str, Any]]:
    text = raw.strip()
    if not text:
        raise InvalidRequest("The import body is empty.", code="invalid_json")
    try:
        if text.startswith(b"["):
            parsed = orjson.loads(text)
        else:
            parsed = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"Import body is not JSONL: {error}", code="invalid_json") from None
    if not all(isinstance(r, dict) for r in parsed):
        raise InvalidRequest("Every import record must be a JSON object.", param="records")
    return list(parsed)


@router.post("/summarize", status_code=201)
async def summarize(
    tenant: Context, body: Annotated[SummarizeBody, Depends(json_body(SummarizeBody))]
) -> dict[str, Any]:
    """Distil a user's (or session's) memories into one semantic memory with ``model``."""
    scope = tenant.scope(body.user, body.session)
    try:
        memory = await summarize_memories(tenant.services, tenant.caller, scope, body.model)
    except InvalidMemory as error:
        raise _bad(error) from None
    if memory is None:
        raise NotFound(f"No memories to summarize for user {scope.user!r}.", param="user")
    return public(memory)


@router.get("/{memory_id}")
async def get_memory(memory_id: str, tenant: Context, user: str | None = None) -> dict[str, Any]:
    memory = await tenant.memories.get(tenant.id, memory_id, user=user)
    if memory is None:
        raise NotFound(f"No memory with id {memory_id!r}.", param="memory_id")
    return public(memory)


@router.patch("/{memory_id}")
async def update_memory(
    memory_id: str,
    tenant: Context,
    body: Annotated[PatchBody, Depends(json_body(PatchBody))],
    user: str | None = None,
) -> dict[str, Any]:
    try:
        memory = await tenant.memories.update(
            tenant.id, memory_id, user=user, content=body.content, metadata=body.metadata,
            tier=body.tier,
        )  # fmt: skip
    except InvalidMemory as error:
        raise _bad(error) from None
    if memory is None:
        raise NotFound(f"No memory with id {memory_id!r}.", param="memory_id")
    return public(memory)


@router.delete("/{memory_id}")
async def delete_memory(memory_id: str, tenant: Context, user: str | None = None) -> dict[str, Any]:
    if not await tenant.memories.delete(tenant.id, memory_id, user=user):
        raise NotFound(f"No memory with id {memory_id!r}.", param="memory_id")
    return {"id": memory_id, "object": "memory", "deleted": True}
