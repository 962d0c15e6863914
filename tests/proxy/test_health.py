"""Liveness, readiness, metrics, and the last-resort error handler."""

from __future__ import annotations

import httpx
import pytest

from config import Settings
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.fakes import FakeUpstream


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"authorization": ""})
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_ready_when_store_and_upstream_answer(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"store": "ok", "upstream": "ok"}


async def test_not_ready_when_the_upstream_is_unreachable(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.enqueue(httpx.ConnectError("refused"))
    response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["upstream"].startswith("unreachable")
    assert body["error"]["code"] == "not_ready"


async def test_metrics_count_requests(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await client.post("/v1/chat/completions", json=body, headers={"x-memory-mode": "off"})
    text = (await client.get("/metrics")).text
    assert 'memshadow_requests_total{route="chat",status="200"} 1.0' in text
    assert 'memshadow_memory_status_total{status="off"} 1.0' in text


async def test_metrics_count_passthrough_calls_and_show_the_process(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    assert (await client.get("/v1/models")).status_code == 200
    upstream.enqueue(httpx.Response(400, json={"error": {"message": "bad input"}}))
    embeddings = await client.post("/v1/embeddings", json={"model": "e", "input": "hi"})
    assert embeddings.status_code == 400
    text = (await client.get("/metrics")).text
    assert 'memshadow_requests_total{route="models",status="200"} 1.0' in text
    assert 'memshadow_requests_total{route="embeddings",status="400"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    # The recall limit is its ceiling before any recall has finished, not 0.
    assert "memshadow_recall_concurrency_limit 16.0" in text


class BrokenRegistry(TenantRegistry):
    def find_key(self, key_hash: str) -> None:
        raise RuntimeError("disk on fire /secret/path")


async def test_an_unexpected_failure_is_an_openai_shaped_500(
    settings: Settings, upstream: FakeUpstream
) -> None:
    app = build_app(settings, registry=BrokenRegistry(str(settings.data_dir / "r")))
    async with in_process(app, raise_app_exceptions=False) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": "Bearer msk-whatever"},
        )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "fire" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(("method", "path"), [("get", "/v1/feedback"), ("put", "/v1/memories/m")])
async def test_wrong_method_is_openai_shaped(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # On MemShadow's own routes; other /v1 paths are the upstream's (tests/proxy/test_forward.py).
    response = await getattr(client, method)(path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_start_up_objects_are_kept_out_of_full_collections_while_serving(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> None:
    import gc

    app = build_app(settings, registry=registry)
    async with in_process(app, tenant_key) as http:
        assert (await http.get("/health")).status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # handed back to the collector at shutdown
