"""Tenant keys, the auth cache, pass-through mode and the admin API."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from config import Settings
from proxy.auth import Authenticator
from proxy.errors import AuthenticationFailed
from proxy.keys import TenantRegistry, TenantUpstream
from tests.conftest import ADMIN_KEY, build_app, in_process
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.usefixtures("upstream")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _chat(client: httpx.AsyncClient, authorization: str | None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization is not None else {}
    client.headers.pop("authorization", None)
    return await client.post("/v1/chat/completions", json=BODY, headers=headers)


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer msk-not-a-real-key-at-all-0000000000000000", "invalid_api_key"),
        ("Bearer sk-some-openai-key", "invalid_api_key"),
    ],
)
async def test_bad_credentials_are_401_in_openai_shape(
    client: httpx.AsyncClient, upstream: FakeUpstream, authorization: str | None, code: str
) -> None:
    response = await _chat(client, authorization)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == code
    assert upstream.requests == []


async def test_keys_are_random_hashed_and_never_logged(
    client: httpx.AsyncClient,
    registry: TenantRegistry,
    tenant_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert tenant_key.startswith("msk-") and len(tenant_key) >= 4 + 43  # 256 bits, url-safe
    assert (await _chat(client, f"Bearer {tenant_key}")).status_code == 200
    bad = tenant_key[:-4] + "AAAA"
    assert (await _chat(client, f"Bearer {bad}")).status_code == 401
    stored = str([r.to_public() for r in registry.list_keys()]) + str(registry.list_keys())
    assert tenant_key not in stored and tenant_key[8:-4] not in stored
    assert tenant_key not in caplog.text and bad not in caplog.text


async def test_revoked_and_expired_keys_are_refused(
    client: httpx.AsyncClient, registry: TenantRegistry
) -> None:
    expired, _ = registry.create_key("acme", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (await _chat(client, f"Bearer {expired}")).status_code == 401

    key, record = registry.create_key("acme")
    assert (await _chat(client, f"Bearer {key}")).status_code == 200
    revoked = await client.delete(
        f"/admin/keys/{record.id}", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    # The revoke went through this process, so the cached "valid" must be gone at once.
    assert (await _chat(client, f"Bearer {key}")).status_code == 401


def _count_lookups(registry: TenantRegistry) -> list[str]:
    """The digests the registry is asked for from now on."""
    lookups: list[str] = []
    original = registry.find_key

    def counting(digest: str) -> object:
        lookups.append(digest)
        return original(digest)

    registry.find_key = counting  # type: ignore[method-assign,assignment]
    return lookups


async def test_lookups_are_cached(registry: TenantRegistry) -> None:
    key, _ = registry.create_key("acme")
    lookups = _count_lookups(registry)
    auth = Authenticator(registry, ttl_s=60)
    for _ in range(50):
        assert (await auth.authenticate(f"Bearer {key}")).tenant.id == "acme"
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("Bearer msk-unknown")
    assert len(lookups) == 2  # one for the good key, one (negative, cached) for the unknown one


async def test_concurrent_misses_on_one_key_share_one_lookup(registry: TenantRegistry) -> None:
    key, _ = registry.create_key("acme")
    lookups = _count_lookups(registry)
    auth = Authenticator(registry, ttl_s=60)
    callers = await asyncio.gather(*(auth.authenticate(f"Bearer {key}") for _ in range(32)))
    assert {caller.tenant.id for caller in callers} == {"acme"}
    assert len(lookups) == 1
    # A waiter that is cancelled leaves the lookup running for the others.
    auth.invalidate()
    first = asyncio.ensure_future(auth.authenticate(f"Bearer {key}"))
    second = asyncio.ensure_future(auth.authenticate(f"Bearer {key}"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).tenant.id == "acme"
    assert len(lookups) == 2


async def test_passthrough_mode_forwards_the_callers_key(
    settings: Settings, registry: TenantRegistry, upstream: FakeUpstream
) -> None:
    app = build_app(settings.model_copy(update={"auth_mode": "passthrough"}), registry=registry)
    async with in_process(app) as http:
        for key in ("sk-caller-one", "sk-caller-one", "sk-caller-two"):
            response = await http.post(
                "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200
    assert [r.headers["authorization"] for r in upstream.requests] == [
        "Bearer sk-caller-one",
        "Bearer sk-caller-one",
        "Bearer sk-caller-two",
    ]
    derived = [t.id for t in registry.list_tenants() if t.id.startswith("pt-")]
    assert len(derived) == 2  # a stable tenant per provider key
    assert all("sk-caller" not in t for t in derived)


async def test_tenant_upstream_overrides_global_credentials(
    client: httpx.AsyncClient, registry: TenantRegistry, upstream: FakeUpstream
) -> None:
    registry.put_tenant("acme", upstream=TenantUpstream(api_key="sk-acme-own"))
    key, _ = registry.create_key("acme")
    assert (await _chat(client, f"Bearer {key}")).status_code == 200
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-acme-own"


class TestAdminApi:
    async def test_requires_the_admin_key(self, client: httpx.AsyncClient, tenant_key: str) -> None:
        client.headers.pop("authorization")
        for authorization in ("", f"Bearer {tenant_key}", "Bearer x"):
            response = await client.get("/admin/keys", headers={"authorization": authorization})
            assert response.status_code == 401
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    async def test_disabled_without_admin_key(
        self, settings: Settings, registry: TenantRegistry
    ) -> None:
        app = build_app(settings.model_copy(update={"admin_key": None}), registry=registry)
        async with in_process(app) as http:
            response = await http.get("/admin/keys", headers={"authorization": "Bearer x"})
        assert response.status_code == 403
        assert "MEMSHADOW_ADMIN_KEY" in response.json()["error"]["message"]

    async def test_tenant_and_key_lifecycle(self, client: httpx.AsyncClient) -> None:
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        created = await client.post(
            "/admin/tenants",
            json={
                "name": "globex",
                "upstream": {"api_key": "sk-globex", "provider_keys": {"anthropic": "sk-ant"}},
            },
            headers=admin,
        )
        assert created.status_code == 201
        assert created.json()["upstream"] == {
            "base_url": None,
            "api_key_set": True,
            "providers": ["anthropic"],
        }
        assert "sk-globex" not in created.text

        issued = await client.post(
            "/admin/keys", json={"tenant": "globex", "expires_in_days": 30}, headers=admin
        )
        assert issued.status_code == 201
        key = issued.json()["key"]
        assert issued.json()["expires_at"]
        listed = await client.get("/admin/keys", params={"tenant": "globex"}, headers=admin)
        assert [k["id"] for k in listed.json()["data"]] == [issued.json()["id"]]
        assert key not in listed.text

        assert (await _chat(client, f"Bearer {key}")).status_code == 200

    @pytest.mark.parametrize(
        ("path", "body", "param"),
        [
            ("/admin/tenants", {"name": "Bad Name!"}, "name"),
            ("/admin/keys", {"tenant": "x'; drop"}, "tenant"),
            ("/admin/keys", {}, "tenant"),
            ("/admin/keys", {"tenant": "ok", "expires_in_days": -1}, "expires_in_days"),
            # past any date a timestamp can hold (found by schemathesis: it was a 500)
            ("/admin/keys", {"tenant": "ok", "expires_in_days": 1e300}, "expires_in_days"),
            ("/admin/keys", {"tenant": "ok", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ],
    )
    async def test_bad_admin_input_is_400(
        self, client: httpx.AsyncClient, path: str, body: dict[str, object], param: str
    ) -> None:
        response = await client.post(
            path, json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param

    async def test_revoking_an_unknown_key_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.delete(
            "/admin/keys/key_0000000000000000", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status_code == 404
