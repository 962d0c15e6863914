"""The operator dashboard and its JSON overview: guard, real figures, escaping, no secrets."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from config import Settings
from memory.lancedb_store import LanceMemoryStore
from memory.model import Memory, Scope
from memory.service import MemoryService
from memory.store import Vectors
from proxy import wire
from proxy.capture import CaptureJob, CaptureQueue
from proxy.feedback import CalibrationBook
from proxy.keys import Tenant, TenantRegistry
from proxy.metrics import Metrics
from proxy.receipts import ReceiptStore
from proxy.shared_state.memory import InProcessState
from tests.conftest import ADMIN_KEY, UPSTREAM, build_app, in_process
from tests.fakes import FakeEmbedder, FakeUpstream, completion
from tests.proxy.test_memories_api import eventually

PAGES = ("/dashboard", "/admin/overview")
CHAT = "/v1/chat/completions"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


# -- the guard -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", PAGES)
async def test_without_an_admin_key_configured_both_answer_403(
    settings: Settings, registry: TenantRegistry, path: str
) -> None:
    app = build_app(settings.model_copy(update={"admin_key": None}), registry=registry)
    async with in_process(app) as http:
        response = await http.get(path, headers=basic("ops", ADMIN_KEY))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer not-the-admin-key"},
        basic("ops", "not-the-admin-key"),
        basic(ADMIN_KEY, ""),  # the key is the password, not the user name
        {"authorization": "Basic !!not-base64!!"},
    ],
    ids=["none", "wrong-bearer", "wrong-basic", "key-as-user", "malformed-basic"],
)
async def test_missing_or_wrong_credentials_get_a_basic_challenge(
    app: FastAPI, path: str, headers: dict[str, str]
) -> None:
    async with in_process(app) as http:
        response = await http.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="memshadow"'
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and set(error) >= {"message", "code"}
    assert "not-the-admin-key" not in response.text


async def test_a_tenant_key_is_not_an_admin_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 401


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    "headers",
    [ADMIN, basic("ops", ADMIN_KEY), basic("", ADMIN_KEY)],
    ids=["bearer", "basic", "basic-no-user"],
)
async def test_the_admin_key_opens_both(app: FastAPI, path: str, headers: dict[str, str]) -> None:
    async with in_process(app) as http:
        response = await http.get(path, headers=headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    expected = "text/html" if path == "/dashboard" else "application/json"
    assert response.headers["content-type"].startswith(expected)


async def test_the_page_runs_no_script_and_reloads_as_asked(app: FastAPI) -> None:
    async with in_process(app) as http:
        default = await http.get("/dashboard", headers=ADMIN)
        still = await http.get("/dashboard?refresh=0", headers=ADMIN)
        invalid = await http.get("/dashboard?refresh=-1", headers=ADMIN)
    assert "default-src 'none'" in default.headers["content-security-policy"]
    assert '<meta http-equiv="refresh" content="10">' in default.text
    assert "http-equiv" not in still.text
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "refresh"


# -- the figures ---------------------------------------------------------------------------
async def _store(client: httpx.AsyncClient, user: str, items: list[dict[str, str]]) -> None:
    await client.post("/v1/memories", json={"user": user, "items": items})

    async def searchable() -> bool:
        body = {"query": items[-1]["content"], "user": user}
        found = (await client.post("/v1/memories/search", json=body)).json()["data"]
        return any(item["content"] == items[-1]["content"] for item in found)

    await eventually(searchable)


async def _chat(
    client: httpx.AsyncClient, text: str, mode: str, completion_id: str = "cmpl-x"
) -> httpx.Response:
    return await client.post(
        CHAT,
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        headers={"x-memory-user": "ann", "x-memory-mode": mode},
    )


async def _traffic(client: httpx.AsyncClient, upstream: FakeUpstream) -> Counter[str]:
    """Memories in three tiers, three chats (one fails upstream), one feedback."""
    await _store(client, "ann", [
        {"content": "Ann drinks green tea every morning.", "tier": "long_term"},
        {"content": "Ann's bike is red and old.", "tier": "semantic"},
        {"content": "Ann asked which train goes to Porto.", "tier": "episodic"},
    ])  # fmt: skip
    statuses: Counter[str] = Counter()
    upstream.enqueue(httpx.Response(200, json={**completion("m", "Okay."), "id": "cmpl-1"}))
    # read: inject only, so the three memories stay the only ones (nothing is captured)
    asked = await _chat(client, "What tea does Ann drink in the morning?", "read")
    assert asked.headers["x-memory-status"] == "ok"
    statuses[asked.headers["x-memory-status"]] += 1
    feedback = await client.post("/v1/feedback", json={"completion_id": "cmpl-1", "useful": True})
    assert feedback.status_code == 200
    statuses[(await _chat(client, "hello", "off")).headers["x-memory-status"]] += 1
    upstream.enqueue(httpx.Response(500, json={"error": {"message": "boom", "type": "x"}}))
    failed = await _chat(client, "hello again", "off")
    assert failed.status_code == 500
    statuses[failed.headers["x-memory-status"]] += 1
    return statuses


async def test_the_overview_reports_what_happened(
    client: httpx.AsyncClient, upstream: FakeUpstream, registry: TenantRegistry
) -> None:
    statuses = await _traffic(client, upstream)
    revoked = (await client.post("/admin/keys", json={"tenant": "acme"}, headers=ADMIN)).json()
    await client.delete(f"/admin/keys/{revoked['id']}", headers=ADMIN)
    registry.create_key("acme", expires_at=datetime.now(UTC) - timedelta(days=1))
    await client.post(
        "/admin/tenants", json={"name": "beta", "policy": {"candidates": 8}}, headers=ADMIN
    )

    async def settled() -> bool:
        figures = (await client.get("/admin/overview", headers=ADMIN)).json()["ingestion"]
        return figures == {"capture_queue": 0, "capture_dropped": 0, "write_backlog": 0}

    await eventually(settled)
    overview = (await client.get("/admin/overview", headers=ADMIN)).json()
    calibration = (await client.get("/v1/calibration")).json()

    assert overview["object"] == "memshadow.overview"
    server = overview["server"]
    assert server["upstream_base_url"] == UPSTREAM
    assert server["memory"] == {"enabled": True, "reason": "memory on"}
    assert server["redis_url"] is None and server["auth_mode"] == "keys"
    assert server["uptime_s"] > 0 and server["resident_memory_bytes"] > 0
    traffic = overview["traffic"]
    assert traffic["chat_requests"] == {"200": 2, "500": 1}
    assert traffic["responses_requests"] == {}
    assert traffic["memory_status"] == {"ok": 1, "abstained": 0, "off": 2, "degraded": 0}
    assert statuses == {"ok": 1, "off": 2}  # what the responses said, too
    assert traffic["memory_status_share"] == {
        "ok": 0.3333, "abstained": 0.0, "off": 0.6667, "degraded": 0.0
    }  # fmt: skip
    assert traffic["degraded_reasons"] == {} and traffic["feedback"] == {"explicit": 1}
    assert traffic["recall_concurrency"] == {"current": 16, "ceiling": 16}
    [latency] = traffic["upstream_latency"]
    assert latency["kind"] == "openai" and latency["count"] == 2  # the 500 is not timed
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] and latency["mean_ms"] > 0

    acme, beta = overview["tenants"]
    assert acme["name"] == "acme" and beta["name"] == "beta"
    assert (acme["keys"]["active"], acme["keys"]["revoked"], acme["keys"]["expired"]) == (1, 1, 1)
    [hint] = acme["keys"]["active_hints"]
    assert hint.startswith("msk-") and "…" in hint
    assert acme["memories"] == {"working": 0, "episodic": 1, "semantic": 1, "long_term": 1}
    assert acme["memories_total"] == 3
    assert acme["calibration"] == {
        "outcomes": 1.0,
        "expected_calibration_error": calibration["expected_calibration_error"],
        "threshold": calibration["threshold"],
        "configured_threshold": 0.2,
        "target_precision": calibration["target_precision"],
    }
    assert acme["calibration"]["expected_calibration_error"] > 0
    assert beta["keys"]["active"] == 0 and beta["memories_total"] == 0
    assert beta["policy_overrides"] == ["candidates"] and beta["policy_error"] is None


async def test_the_page_shows_the_same_figures(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await _traffic(client, upstream)
    page = (await client.get("/dashboard", headers=ADMIN)).text
    overview = (await client.get("/admin/overview", headers=ADMIN)).json()
    [acme] = overview["tenants"]
    calibration = acme["calibration"]
    assert f"<code>{UPSTREAM}</code>" in page and "memory on" in page
    assert '<td class="">200</td><td class="n">2</td>' in page
    assert '<td class="bad">500</td><td class="n">1</td>' in page
    assert '<td>ok</td><td class="n">1</td><td class="n">33.3%</td>' in page
    assert '<td>off</td><td class="n">2</td><td class="n">66.7%</td>' in page
    assert "16 of at most 16 in flight" in page
    assert "<strong>acme</strong>" in page and "Tenants (1)" in page
    assert f"<code>{acme['keys']['active_hints'][0]}</code>" in page
    assert "<strong>3</strong><br>episodic 1<br>semantic 1<br>long_term 1" in page
    assert (
        f"1.0 outcomes, ECE {calibration['expected_calibration_error']}<br>"
        f"threshold {calibration['threshold']}"
    ) in page
    [latency] = overview["traffic"]["upstream_latency"]
    assert f'<td>openai</td><td class="n">2</td><td class="n">{latency["mean_ms"]} ms</td>' in page


async def test_plain_proxy_mode_says_why_and_counts_no_memories(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> None:
    off = settings.model_copy(
        update={"memory": settings.memory.model_copy(update={"enabled": False})}
    )
    async with in_process(build_app(off, registry=registry)) as http:
        overview = (await http.get("/admin/overview", headers=ADMIN)).json()
        page = (await http.get("/dashboard", headers=ADMIN)).text
    assert overview["server"]["memory"]["enabled"] is False
    assert "disabled by setting" in overview["server"]["memory"]["reason"]
    assert overview["ingestion"] is None
    assert overview["traffic"]["recall_concurrency"] is None
    assert overview["tenants"][0]["memories"] is None
    assert "disabled by setting" in page and "memory off" in page


async def test_an_engine_that_failed_to_start_is_named(
    settings: Settings, registry: TenantRegistry
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "memory").write_text("a file where the memory directory should be")
    async with in_process(build_app(settings, registry=registry)) as http:
        memory = (await http.get("/admin/overview", headers=ADMIN)).json()["server"]["memory"]
    assert memory == {
        "enabled": False,
        "reason": "plain proxy: the memory engine failed to start (see the log)",
    }


class HeldStore(LanceMemoryStore):
    """Writes wait for ``writes``, duplicate checks (every store starts with one) for
    ``lookups``: a backlog that stays put while it is looked at."""

    def __init__(self, uri: Path) -> None:
        super().__init__(uri, model_id=FakeEmbedder().model_id, dimension=FakeEmbedder().dimension)
        self.writes, self.lookups = asyncio.Event(), asyncio.Event()
        self.lookups.set()

    async def add(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        await self.writes.wait()
        await super().add(tenant, memories, vectors, new=new)

    async def by_hash(self, tenant: str, user: str, hashes: Sequence[str]) -> list[Memory | None]:
        await self.lookups.wait()
        return await super().by_hash(tenant, user, hashes)


def _gauge(scraped: str, name: str) -> float:
    [line] = [line for line in scraped.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_the_ingestion_backlog_is_what_waits(
    settings: Settings, registry: TenantRegistry, tenant_key: str, upstream: FakeUpstream
) -> None:
    store = HeldStore(settings.data_dir / "held")
    memories = MemoryService(settings.data_dir / "memory", FakeEmbedder(), store=store)
    await memories.start()
    app = build_app(settings, registry=registry, memories=memories)
    seen: dict[str, Any] = {}

    async def ingestion_is(http: httpx.AsyncClient, wanted: Callable[[Any], bool]) -> bool:
        seen.update((await http.get("/admin/overview", headers=ADMIN)).json())
        return wanted(seen["ingestion"])

    try:
        async with in_process(app, tenant_key) as http:
            items = [{"content": "Ann drinks green tea."}, {"content": "Ann rides a red bike."}]
            stored = await http.post("/v1/memories", json={"user": "ann", "items": items})
            assert stored.is_success
            store.lookups.clear()  # the capture worker now stops at its first exchange
            for n in range(3):
                assert (await _chat(http, f"note {n}", "write")).is_success
            # The two later exchanges wait at least (the queue may hold other jobs too).
            await eventually(lambda: ingestion_is(http, lambda i: i["capture_queue"] >= 2))
            held = seen["ingestion"]
            assert held["write_backlog"] == 2 and held["capture_dropped"] == 0
            scraped_held = (await http.get("/metrics")).text
            assert seen["tenants"][0]["memories_total"] == 0  # acknowledged, not stored yet
            page = (await http.get("/dashboard", headers=ADMIN)).text
            store.writes.set()
            store.lookups.set()
            await eventually(
                lambda: ingestion_is(http, lambda i: i["capture_queue"] == i["write_backlog"] == 0)
            )
            scraped_after = (await http.get("/metrics")).text
    finally:
        store.writes.set()
        store.lookups.set()
        await memories.aclose()
    # /metrics said what the overview said, while held and after.
    assert _gauge(scraped_held, "memshadow_ingest_backlog") == 2
    assert _gauge(scraped_held, "memshadow_capture_queue") >= 2
    assert _gauge(scraped_held, "memshadow_capture_dropped_total") == 0
    assert _gauge(scraped_after, "memshadow_capture_queue") == 0
    assert _gauge(scraped_after, "memshadow_ingest_backlog") == 0
    waiting = held["capture_queue"]
    assert f'exchanges waiting to be captured</th><td class="n">{waiting}<' in page
    assert 'memories acknowledged, not yet stored</th><td class="n">2<' in page
    assert seen["tenants"][0]["memories_total"] > 2  # the two stored and the captured turns


# -- escaping and secrets --------------------------------------------------------------
SCRIPT = "<script>alert(1)</script>"


class HostileRegistry(TenantRegistry):
    """A tenant name the registry itself would refuse: the page must not trust names."""

    def list_tenants(self) -> list[Tenant]:
        return [*super().list_tenants(), Tenant(id=SCRIPT, created_at=datetime.now(UTC))]


async def test_values_from_tenants_are_escaped(settings: Settings) -> None:
    registry = HostileRegistry(str(settings.data_dir / "registry"))
    async with in_process(build_app(settings, registry=registry)) as http:
        # Admin input that reaches the page: a policy field name and an upstream URL.
        created = await http.post(
            "/admin/tenants",
            json={"name": "acme", "policy": {SCRIPT: 1},
                  "upstream": {"base_url": "https://llm.example/<b>x</b>"}},
            headers=ADMIN,
        )  # fmt: skip
        assert created.status_code == 201
        page = (await http.get("/dashboard", headers=ADMIN)).text
        overview = (await http.get("/admin/overview", headers=ADMIN)).json()
    assert "<script" not in page and "<b>x</b>" not in page
    assert "<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>" in page
    # injection falls back to the default policy: the page says so, naming the field
    assert "invalid policy, default used: policy.&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert [t["name"] for t in overview["tenants"]] == ["acme", SCRIPT]  # JSON keeps the value


async def test_no_secret_appears_in_the_page_or_the_json(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> None:
    secrets = {
        "upstream_base_url": "https://ops:basepass@upstream.test/v1?api-key=querysecret",
        "upstream_api_key": "sk-upstream-secret",
        "redis_url": "redis://:redispass@redis.internal:6379/0",
    }
    app = build_app(settings.model_copy(update=secrets), registry=registry)
    async with in_process(app) as http:
        upstream = {
            "base_url": "https://me:tenantpass@llm.example/v1",
            "api_key": "sk-tenant-secret",
            "provider_keys": {"anthropic": "sk-ant-secret"},
        }
        await http.post(
            "/admin/tenants", json={"name": "acme", "upstream": upstream}, headers=ADMIN
        )
        bodies = [
            (await http.get("/dashboard", headers=ADMIN)).text,
            (await http.get("/admin/overview", headers=ADMIN)).text,
        ]
        overview: dict[str, Any] = (await http.get("/admin/overview", headers=ADMIN)).json()
    [record] = registry.list_keys("acme")
    leaked = [
        ADMIN_KEY, "basepass", "querysecret", "sk-upstream-secret", "redispass", "tenantpass",
        "sk-tenant-secret", "sk-ant-secret", tenant_key, record.key_hash,
    ]  # fmt: skip
    for body in bodies:
        assert [s for s in leaked if s in body] == []
    # What is shown instead: where things are, and that a key is set.
    assert overview["server"]["upstream_base_url"] == "https://upstream.test/v1"
    assert overview["server"]["redis_url"] == "redis://redis.internal:6379/0"
    [acme] = overview["tenants"]
    assert acme["upstream_base_url"] == "https://llm.example/v1" and acme["upstream_key_set"]
    assert "redis://redis.internal:6379/0" in bodies[0] and "own key" in bodies[0]


async def test_redis_health_is_shown(
    settings: Settings, registry: TenantRegistry, redis_server: Any
) -> None:
    shared = settings.model_copy(update={"redis_url": redis_server.url})
    async with in_process(build_app(shared, registry=registry)) as http:
        up = (await http.get("/admin/overview", headers=ADMIN)).json()["server"]
        assert up["redis_url"] == redis_server.url and up["redis_up"] is True
        assert "</code>, up</td>" in (await http.get("/dashboard", headers=ADMIN)).text
        redis_server.stop()

        async def down() -> bool:  # the broken subscription marks it down
            server = (await http.get("/admin/overview", headers=ADMIN)).json()["server"]
            return server["redis_up"] is False

        await eventually(down)
        page = (await http.get("/dashboard", headers=ADMIN)).text
    assert "down</strong>: memory is degraded" in page


async def test_an_exchange_the_full_capture_queue_drops_is_counted(tmp_path: Path) -> None:
    memories = MemoryService(tmp_path / "memory", FakeEmbedder())
    shared = InProcessState()
    metrics = Metrics()
    capture = CaptureQueue(
        memories, shared, ReceiptStore(shared), CalibrationBook(shared), metrics, maxsize=1
    )  # not started: nothing takes jobs off the queue
    job = CaptureJob(Scope(tenant="t", user="ann"), wire.CHAT, b"{}", [], streamed=False)
    for _ in range(3):
        capture.submit(job)
    assert capture.depth == 1 and capture.dropped == 2
    assert metrics.registry.get_sample_value("memshadow_capture_dropped_total") == 2.0
