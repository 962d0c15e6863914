"""Per-tenant request limits: 429 in OpenAI's shape with Retry-After, shared by replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from proxy.errors import RateLimited
from proxy.keys import TenantRegistry
from proxy.rate_limit import RateLimiter
from proxy.shared_state import InProcessState
from tests.conftest import ADMIN_KEY, RedisServer, build_app, in_process
from tests.proxy.test_scale_out import replica_settings

pytestmark = pytest.mark.usefixtures("upstream")
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


async def test_a_tenant_gets_its_limit_then_waits_for_the_window() -> None:
    now = [600.0]
    limiter = RateLimiter(InProcessState(), clock=lambda: now[0])
    for _ in range(3):
        limiter.admit("acme", 3)
    limiter.admit("other", 3)  # limits are per tenant
    limiter.admit("acme", None)  # no limit set
    with pytest.raises(RateLimited) as refused:
        limiter.admit("acme", 3)
    assert refused.value.headers["retry-after"] == "80"  # 3 fade to 2 a third into the next
    await limiter.sync()
    now[0] += 80.0
    limiter.admit("acme", 3)


async def test_over_the_limit_is_a_429_in_openais_shape(
    client: httpx.AsyncClient, registry: TenantRegistry
) -> None:
    registry.put_tenant("acme", policy={"requests_per_minute": 2})
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"]
    assert refused.json() == {
        "error": {
            "message": refused.json()["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert "2 requests per minute" in refused.json()["error"]["message"]


async def test_replicas_hold_a_tenant_to_one_limit(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    registry = TenantRegistry(str(tmp_path / "store" / "registry"))
    key, _ = registry.create_key("acme")
    a_app = build_app(replica_settings(tmp_path, "a", redis_server.url))
    b_app = build_app(replica_settings(tmp_path, "b", redis_server.url))
    async with in_process(a_app, key) as a, in_process(b_app, key) as b:
        assert (await b.post("/v1/chat/completions", json=CHAT)).status_code == 200  # B caches
        policy = {"name": "acme", "policy": {"requests_per_minute": 3}}
        assert (await a.post("/admin/tenants", json=policy, headers=ADMIN)).status_code == 201
        await asyncio.sleep(0.5)  # the policy change reaches B (its key cache is dropped)
        for replica in (a, b, b):
            assert (await replica.post("/v1/chat/completions", json=CHAT)).status_code == 200
            await asyncio.sleep(0.5)  # each replica adds its count every 0.2 s
        # 3 requests counted, 1 through A: alone, A would admit this one.
        refused = await a.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429, refused.text
