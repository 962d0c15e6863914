"""Tenants and their API keys, kept in the embedded LanceDB store.

Keys are ``msk-`` + 43 url-safe characters (256 random bits). Only their SHA-256 is stored: a
key with 256 bits of entropy needs no slow hash, and a digest lookup is what lets auth stay in
microseconds behind the cache in :mod:`proxy.auth`. The registry lives next to the memories
(``<store>/registry``) so that replicas sharing a LanceDB URI share their tenants too.

This module does blocking I/O; the server calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import lancedb
import orjson
import pyarrow as pa

from config import Settings

KEY_PREFIX = "msk-"
# A bound that keeps every expiry a real date; a key meant to outlive it should not expire.
MAX_KEY_LIFETIME_DAYS = 36_500
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")

_TENANTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("upstream", pa.string(), nullable=False),
    ]
)
_KEYS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("key_hash", pa.string(), nullable=False),
        pa.field("hint", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("expires_at", pa.timestamp("us", tz="UTC"), nullable=True),
        pa.field("revoked_at", pa.timestamp("us", tz="UTC"), nullable=True),
    ]
)


class RegistryError(ValueError):
    """A registry request that cannot be honoured (bad name, unknown tenant or key)."""


@dataclass(frozen=True, slots=True)
class TenantUpstream:
    """Per-tenant upstream credentials; each field overrides the global setting."""

    base_url: str | None = None
    api_key: str | None = None
    provider_keys: dict[str, str] = field(default_factory=dict)

    def to_public(self) -> dict[str, Any]:
        """What an operator may see: which overrides exist, never the secrets."""
        return {
            "base_url": self.base_url,
            "api_key_set": self.api_key is not None,
            "providers": sorted(self.provider_keys),
        }


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    created_at: datetime
    policy: dict[str, Any] = field(default_factory=dict)
    upstream: TenantUpstream = field(default_factory=TenantUpstream)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "policy": self.policy,
            "upstream": self.upstream.to_public(),
        }


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant: str
    key_hash: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "hint": self.hint,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def registry_uri(settings: Settings) -> str:
    """Next to the memories (``MEMSHADOW_STORE_URI``), so replicas sharing it share tenants."""
    return f"{settings.store_root}/registry"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_tenant_name(name: str) -> str:
    if not _TENANT_NAME.match(name):
        raise RegistryError(
            "tenant names are 1-63 characters of a-z, 0-9, '_' and '-', starting with a "
            f"letter or digit; got {name!r}"
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


def _tenant_from_row(row: dict[str, Any]) -> Tenant:
    upstream = orjson.loads(row["upstream"])
    return Tenant(
        id=row["id"],
        created_at=row["created_at"],
        policy=orjson.loads(row["policy"]),
        upstream=TenantUpstream(**upstream),
    )


class TenantRegistry:
    """Tenants and keys in two small LanceDB tables."""

    def __init__(self, uri: str) -> None:
        # The CLI and other replicas write here while a server reads: check for a newer
        # version on every read (reads only happen on auth cache misses).
        self._db = lancedb.connect(uri, read_consistency_interval=timedelta(0))
        self._tenants = self._db.create_table("tenants", schema=_TENANTS_SCHEMA, exist_ok=True)
        self._keys = self._db.create_table("api_keys", schema=_KEYS_SCHEMA, exist_ok=True)

    # --- tenants --------------------------------------------------------------------------

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        if not _TENANT_NAME.match(tenant_id):
            return None
        rows = self._tenants.search().where(f"id = '{tenant_id}'").limit(1).to_list()
        return _tenant_from_row(rows[0]) if rows else None

    def list_tenants(self) -> list[Tenant]:
        rows = self._tenants.to_arrow().to_pylist()
        return sorted((_tenant_from_row(r) for r in rows), key=lambda t: t.id)

    def put_tenant(
        self,
        name: str,
        *,
        policy: dict[str, Any] | None = None,
        upstream: TenantUpstream | None = None,
    ) -> Tenant:
        """Create the tenant, or update the policy/upstream given for an existing one."""
        validate_tenant_name(name)
        existing = self.get_tenant(name)
        tenant = Tenant(
            id=name,
            created_at=existing.created_at if existing else _now(),
            policy=policy if policy is not None else (existing.policy if existing else {}),
            upstream=upstream
            if upstream is not None
            else (existing.upstream if existing else TenantUpstream()),
        )
        row = {
            "id": tenant.id,
            "created_at": tenant.created_at,
            "policy": orjson.dumps(tenant.policy).decode(),
            "upstream": orjson.dumps(tenant.upstream).decode(),
        }
        (
            self._tenants.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist([row], schema=_TENANTS_SCHEMA))
        )
        return tenant

    # --- keys -----------------------------------------------------------------------------

    def create_key(
        self, tenant: str, *, expires_at: datetime | None = None
    ) -> tuple[str, KeyRecord]:
        """Issue a key for ``tenant`` (created if new). The plaintext is returned once only."""
        if self.get_tenant(tenant) is None:
            self.put_tenant(tenant)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=f"key_{secrets.token_hex(8)}",
            tenant=tenant,
            key_hash=hash_key(key),
            hint=f"{key[:8]}…{key[-4:]}",
            created_at=_now(),
            expires_at=expires_at,
            revoked_at=None,
        )
        row = {name: getattr(record, name) for name in _KEYS_SCHEMA.names}
        self._keys.add(pa.Table.from_pylist([row], schema=_KEYS_SCHEMA))
        return key, record

    def find_key(self, key_hash: str) -> KeyRecord | None:
        if not _HEX_DIGEST.match(key_hash):
            return None
        rows = self._keys.search().where(f"key_hash = '{key_hash}'").limit(1).to_list()
        if not rows:
            return None
        return KeyRecord(**{name: rows[0][name] for name in _KEYS_SCHEMA.names})

    def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        rows = self._keys.to_arrow().to_pylist()
        records = [KeyRecord(**{n: r[n] for n in _KEYS_SCHEMA.names}) for r in rows]
        if tenant is not None:
            records = [r for r in records if r.tenant == tenant]
        return sorted(records, key=lambda r: r.created_at)

    def delete_tenant(self, name: str) -> tuple[bool, int]:
        """Revoke every live key of the tenant and delete its record: (whether it had one,
        keys revoked). Revoked key records stay, for the audit trail."""
        if not _TENANT_NAME.match(name):
            return False, 0
        live = [r for r in self.list_keys(name) if r.revoked_at is None]
        if live:
            self._keys.update(
                where=f"tenant = '{name}' AND revoked_at IS NULL", values={"revoked_at": _now()}
            )
        existed = self.get_tenant(name) is not None
        if existed:
            self._tenants.delete(f"id = '{name}'")
        return existed, len(live)

    def revoke_key(self, key_id: str) -> KeyRecord:
        if not _KEY_ID.match(key_id):
            raise RegistryError(f"no key with id {key_id!r}")
        self._keys.update(
            where=f"id = '{key_id}' AND revoked_at IS NULL", values={"revoked_at": _now()}
        )
        rows = self._keys.search().where(f"id = '{key_id}'").limit(1).to_list()
        if not rows:
            raise RegistryError(f"no key with id {key_id!r}")
        return KeyRecord(**{name: rows[0][name] for name in _KEYS_SCHEMA.names})
