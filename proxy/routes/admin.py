"""Operator endpoints for tenants and keys, guarded by ``MEMSHADOW_ADMIN_KEY``."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request

from proxy.errors import InvalidRequest, MemoryUnavailable, NotFound
from proxy.keys import MAX_KEY_LIFETIME_DAYS, RegistryError, TenantUpstream
from proxy.services import Services, get_services

router = APIRouter(prefix="/admin")
events = logging.getLogger("memshadow.events")


def admin_services(request: Request) -> Services:
    services = get_services(request)
    services.admin.check(request.headers.get("authorization"))
    return services


AdminServices = Annotated[Services, Depends(admin_services)]


class UpstreamOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: SecretStr | None = None
    provider_keys: dict[str, SecretStr] = Field(default_factory=dict)

    def to_tenant_upstream(self) -> TenantUpstream:
        return TenantUpstream(
            base_url=self.base_url.rstrip("/") if self.base_url else None,
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            provider_keys={k: v.get_secret_value() for k, v in self.provider_keys.items()},
        )


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    policy: dict[str, Any] | None = None
    upstream: UpstreamOverride | None = None


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    expires_at: datetime | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_KEY_LIFETIME_DAYS)

    def expiry(self) -> datetime | None:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise InvalidRequest(
                "Give expires_at or expires_in_days, not both.", param="expires_at"
            )
        if self.expires_in_days is not None:
            return datetime.now(UTC) + timedelta(days=self.expires_in_days)
        if self.expires_at is None:
            return None
        expires_at = self.expires_at
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise InvalidRequest("expires_at is in the past: the key would never work.",
                                 param="expires_at")  # fmt: skip
        return expires_at


@router.post("/tenants", status_code=201)
async def put_tenant(body: TenantBody, services: AdminServices) -> dict[str, Any]:
    upstream = body.upstream.to_tenant_upstream() if body.upstream else None
    try:
        tenant = await asyncio.to_thread(
            services.registry.put_tenant, body.name, policy=body.policy, upstream=upstream
        )
    except RegistryError as exc:
        raise InvalidRequest(str(exc), param="name") from None
    await services.auth.invalidate_everywhere()
    return tenant.to_public()


@router.get("/tenants")
async def list_tenants(services: AdminServices) -> dict[str, Any]:
    tenants = await asyncio.to_thread(services.registry.list_tenants)
    return {"object": "list", "data": [t.to_public() for t in tenants]}


@router.delete("/tenants/{tenant_id}")
async def delete_tenant(tenant_id: str, services: AdminServices) -> dict[str, Any]:
    """Offboard a tenant: its keys stop working at once, here and on every replica; then
    its memories (the table and its files), what feedback taught about them and its
    calibration are deleted."""
    if services.memories is None:  # the record alone would leave the memories behind
        raise MemoryUnavailable("The memory engine is not available on this server.")
    existed, revoked = await asyncio.to_thread(services.registry.delete_tenant, tenant_id)
    await services.auth.invalidate_everywhere()
    # Each step is idempotent and the record goes first: a call that failed half-way (the
    # shared state down: 503) is completed by calling again.
    await services.calibration.forget(tenant_id)
    deleted = await services.memories.forget_tenant(tenant_id)
    if not existed and not deleted:
        raise NotFound(f"No tenant named {tenant_id!r}.", param="tenant_id")
    events.info(
        "tenant deleted: tenant=%s keys_revoked=%d memories=%d", tenant_id, revoked, deleted,
        extra={"event": "tenant.deleted", "tenant": tenant_id, "keys_revoked": revoked,
               "memories_deleted": deleted},
    )  # fmt: skip
    return {"id": tenant_id, "object": "tenant.deleted", "deleted": True,
            "keys_revoked": revoked, "memories_deleted": deleted}  # fmt: skip


@router.post("/keys", status_code=201)
async def create_key(body: KeyBody, services: AdminServices) -> dict[str, Any]:
    expires_at = body.expiry()
    try:
        key, record = await asyncio.to_thread(
            services.registry.create_key, body.tenant, expires_at=expires_at
        )
    except RegistryError as exc:
        raise InvalidRequest(str(exc), param="tenant") from None
    # Drop a cached "unknown key" for it, should one exist.
    await services.auth.invalidate_everywhere()
    return {**record.to_public(), "key": key}


@router.get("/keys")
async def list_keys(services: AdminServices, tenant: str | None = None) -> dict[str, Any]:
    records = await asyncio.to_thread(services.registry.list_keys, tenant)
    return {"object": "list", "data": [r.to_public() for r in records]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, services: AdminServices) -> dict[str, Any]:
    try:
        record = await asyncio.to_thread(services.registry.revoke_key, key_id)
    except RegistryError as exc:
        raise NotFound(str(exc), param="key_id") from None
    await services.auth.invalidate_everywhere()
    return record.to_public()
