"""Who is calling: bearer token → tenant, in microseconds on the hot path.

Lookups go to the registry once per key and are then served from a small TTL cache, so a
request pays one dict lookup and one SHA-256. Revocations made through this process
invalidate the cache at once; with a shared state (Redis) every other replica is told to
drop its cache too (and drops it after any gap in what it was told), otherwise they see
revocations within ``ttl_s``. Unknown keys are
cached briefly too, so a client hammering with a bad key cannot turn every request into a
store read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from proxy.errors import AuthenticationFailed, PermissionDenied, SharedStateUnavailable
from proxy.keys import KEY_PREFIX, Tenant, TenantRegistry, hash_key
from proxy.shared_state import SharedState

logger = logging.getLogger("memshadow.auth")
KEYS_CHANNEL = "keys"

_NEGATIVE_TTL_S = 2.0
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated tenant, and in pass-through mode the caller's own provider key."""

    tenant: Tenant
    provider_key: str | None = None


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "Malformed Authorization header; expected 'Bearer <key>'.", code="invalid_api_key"
        )
    return token


def _redact(token: str) -> str:
    return f"{token[:6]}****{token[-4:]}" if len(token) > 12 else "****"


class Authenticator:
    def __init__(
        self,
        registry: TenantRegistry,
        *,
        ttl_s: float = 30.0,
        passthrough: bool = False,
        shared: SharedState | None = None,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._passthrough = passthrough
        self._cache: OrderedDict[str, tuple[float, Caller | None]] = OrderedDict()
        self._resolving: dict[str, asyncio.Future[Caller | None]] = {}
        self._shared = shared
        if shared is not None:
            shared.subscribe(KEYS_CHANNEL, lambda message: self.invalidate(), self.invalidate)

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        digest = hash_key(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            caller = cached[1]
        else:
            caller = await self._resolve_once(token, digest)
        if caller is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {_redact(token)}.")
        return caller

    def invalidate(self) -> None:
        """Forget every cached decision (after a revoke or a tenant update)."""
        self._cache.clear()

    async def invalidate_everywhere(self) -> None:
        """Forget every cached decision here and on every other replica."""
        self.invalidate()
        if self._shared is None:
            return
        try:
            await self._shared.publish(KEYS_CHANNEL, b"invalidate")
        except SharedStateUnavailable:
            logger.warning("other replicas could not be told; they see it within %ss", self._ttl_s)

    async def _resolve_once(self, token: str, digest: str) -> Caller | None:
        """Concurrent misses on one key share one lookup: when a busy key's entry expires
        (or at start), every request in flight would otherwise read the store for it."""
        pending = self._resolving.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(token, digest))
            self._resolving[digest] = pending
            pending.add_done_callback(lambda done: self._settled(digest, done))
        # Shielded: a caller that hangs up does not cancel the lookup the others wait for.
        return await asyncio.shield(pending)

    def _settled(self, digest: str, done: asyncio.Future[Caller | None]) -> None:
        del self._resolving[digest]
        if not done.cancelled():
            done.exception()  # retrieved, even if every waiter has gone

    async def _resolve(self, token: str, digest: str) -> Caller | None:
        expires_at: datetime | None = None
        if token.startswith(KEY_PREFIX) or not self._passthrough:
            caller, expires_at = await asyncio.to_thread(self._lookup_key, digest)
        else:
            caller = await asyncio.to_thread(self._passthrough_caller, token)
        ttl = self._ttl_s if caller is not None else _NEGATIVE_TTL_S
        if expires_at is not None:
            # Never serve an expired key from the cache.
            ttl = min(ttl, max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
        self._remember(digest, caller, ttl)
        return caller

    def _lookup_key(self, digest: str) -> tuple[Caller | None, datetime | None]:
        record = self._registry.find_key(digest)
        # The registry matched on the digest already; the constant-time compare keeps the
        # final decision free of timing differences however the store compares strings.
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            return None, None
        if not record.usable_at(datetime.now(UTC)):
            return None, None
        tenant = self._registry.get_tenant(record.tenant)
        if tenant is None:
            return None, None
        return Caller(tenant=tenant), record.expires_at

    def _passthrough_caller(self, token: str) -> Caller:
        """Derive a stable tenant from the provider key itself, and forward that key."""
        tenant_id = (
            "pt-" + hashlib.sha256(b"memshadow-passthrough:" + token.encode()).hexdigest()[:24]
        )
        tenant = self._registry.get_tenant(tenant_id) or self._registry.put_tenant(tenant_id)
        return Caller(tenant=tenant, provider_key=token)

    def _remember(self, digest: str, caller: Caller | None, ttl: float) -> None:
        self._cache[digest] = (time.monotonic() + ttl, caller)
        self._cache.move_to_end(digest)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


class AdminGuard:
    """Admin endpoints need ``MEMSHADOW_ADMIN_KEY``; without one configured they are off."""

    def __init__(self, admin_key: str | None) -> None:
        self._digest = hash_key(admin_key) if admin_key else None

    def check(self, authorization: str | None) -> None:
        if self._digest is None:
            raise PermissionDenied("The admin API is disabled: set MEMSHADOW_ADMIN_KEY.")
        token = bearer_token(authorization)
        if not hmac.compare_digest(hash_key(token), self._digest):
            raise AuthenticationFailed("Incorrect admin key.", code="invalid_admin_key")
