"""A browser app (openai-node with ``dangerouslyAllowBrowser``) calls MemShadow from another
origin, as it calls OpenAI: preflights pass and the memory headers are readable."""

from __future__ import annotations

import httpx
import pytest

from config import Settings
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.usefixtures("upstream")
APP = "https://app.example"
PREFLIGHT = {
    "origin": APP,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-memory-user",
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/memories"])
async def test_any_origin_may_call_with_its_key_by_default(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str
) -> None:
    preflight = await client.options(path, headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "x-memory-user"} <= set(allowed.replace(" ", "").split(","))
    assert "access-control-allow-credentials" not in preflight.headers  # no cookies
    assert upstream.requests == []  # a preflight never reaches the upstream


async def test_the_answer_and_its_memory_headers_are_readable_cross_origin(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": APP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-expose-headers"] == "*"
    assert answer.headers["x-memory-status"] in {"ok", "abstained"}
    refused = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"origin": APP, "authorization": ""}
    )
    assert refused.status_code == 401  # CORS opens nothing: the key still decides
    assert refused.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("origins", "preflight_status", "allowed"),
    [([APP], 200, APP), (["https://other.example"], 400, None), ([], 405, None)],
)
async def test_operators_restrict_or_turn_off_cors(
    settings: Settings,
    registry: TenantRegistry,
    tenant_key: str,
    origins: list[str],
    preflight_status: int,
    allowed: str | None,
) -> None:
    app = build_app(settings.model_copy(update={"cors_origins": origins}), registry=registry)
    async with in_process(app, tenant_key) as http:
        preflight = await http.options("/v1/chat/completions", headers=PREFLIGHT)
        answer = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": APP})
    assert preflight.status_code == preflight_status
    assert preflight.headers.get("access-control-allow-origin") == allowed
    assert answer.status_code == 200  # a request without CORS is still served (curl, SDKs)
    assert answer.headers.get("access-control-allow-origin") == allowed


def test_origins_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSHADOW_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
