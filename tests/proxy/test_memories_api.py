"""The /v1/memories API through HTTP: store, search, list, get, update, forget, export/import."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from config import MemorySettings, Settings
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.fakes import FakeUpstream, completion

pytestmark = pytest.mark.usefixtures("upstream")


async def eventually(probe: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Stored memories become searchable within a few seconds; wait for it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _search(client: httpx.AsyncClient, query: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/memories/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _found(client: httpx.AsyncClient, query: str, needle: str, **extra: Any) -> bool:
    body = await _search(client, query, **extra)
    return any(needle in item["content"] for item in body["data"])


async def test_store_then_search(client: httpx.AsyncClient) -> None:
    stored = await client.post(
        "/v1/memories",
        json={
            "user": "alice",
            "items": [
                {"content": "Alice moved to Porto in March.", "created_at": "2023-03-02T10:00:00Z"},
                {"content": "Alice's cat is called Miso.", "metadata": {"source": "chat"}},
            ],
        },
    )
    assert stored.status_code == 201, stored.text
    data = stored.json()["data"]
    assert [m["user"] for m in data] == ["alice", "alice"]
    assert data[0]["created_at"].startswith("2023-03-02")
    assert data[0]["tokens"] > 0 and data[0]["id"]

    await eventually(lambda: _found(client, "where does alice live Porto", "Porto", user="alice"))
    body = await _search(client, "what is the cat called Miso", user="alice", k=5)
    top = body["data"][0]
    assert "Miso" in top["content"]
    assert {"id", "content", "score", "created_at", "metadata", "tokens"} <= set(top)
    assert 0.0 <= body["confidence"] <= 1.0


async def test_single_item_at_top_level_and_header_user(client: httpx.AsyncClient) -> None:
    stored = await client.post(
        "/v1/memories", json={"content": "Prefers window seats."}, headers={"x-memory-user": "bob"}
    )
    assert stored.status_code == 201
    assert stored.json()["data"][0]["user"] == "bob"


async def test_users_and_tenants_are_isolated(
    client: httpx.AsyncClient, registry: TenantRegistry
) -> None:
    stored = await client.post(
        "/v1/memories", json={"user": "alice", "content": "Secret: blue door code 4411"}
    )
    memory_id = stored.json()["data"][0]["id"]
    await eventually(lambda: _found(client, "door code", "4411", user="alice"))

    assert not await _found(client, "door code", "4411", user="mallory")
    assert not await _found(client, "door code", "4411", user="x' OR '1'='1")
    assert (
        await client.get(f"/v1/memories/{memory_id}", params={"user": "mallory"})
    ).status_code == 404

    other_key, _ = registry.create_key("globex")
    other = {"authorization": f"Bearer {other_key}"}
    assert (await client.get(f"/v1/memories/{memory_id}", headers=other)).status_code == 404
    assert (await client.delete(f"/v1/memories/{memory_id}", headers=other)).status_code == 404
    leaked = await client.post(
        "/v1/memories/search", json={"query": "door code", "user": "alice"}, headers=other
    )
    assert leaked.json()["data"] == []
    assert (await client.get(f"/v1/memories/{memory_id}")).status_code == 200


async def test_list_paginates_with_a_cursor(client: httpx.AsyncClient) -> None:
    items = [{"content": f"Fact number {i} about gardening."} for i in range(7)]
    await client.post("/v1/memories", json={"user": "carol", "items": items})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"user": "carol", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/memories", params=params)).json()
        seen += [m["content"] for m in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(seen) == sorted(i["content"] for i in items)


async def test_get_update_delete(client: httpx.AsyncClient) -> None:
    stored = await client.post("/v1/memories", json={"user": "dan", "content": "Dan drinks tea."})
    memory_id = stored.json()["data"][0]["id"]
    patched = await client.patch(
        f"/v1/memories/{memory_id}", json={"content": "Dan drinks coffee now.", "tier": "semantic"}
    )
    assert patched.status_code == 200
    assert patched.json()["content"] == "Dan drinks coffee now."
    assert patched.json()["tier"] == "semantic"
    await eventually(lambda: _found(client, "coffee drinks", "coffee", user="dan"))
    assert not await _found(client, "tea", "tea.", user="dan")
    assert (await client.delete(f"/v1/memories/{memory_id}")).status_code == 200
    assert (await client.get(f"/v1/memories/{memory_id}")).status_code == 404
    assert not await _found(client, "coffee drinks", "coffee", user="dan")


async def test_forget_a_user(client: httpx.AsyncClient) -> None:
    await client.post("/v1/memories", json={"user": "erin", "content": "Erin plays the cello."})
    await client.post("/v1/memories", json={"user": "frank", "content": "Frank plays the cello."})
    forgotten = await client.delete("/v1/memories", params={"user": "erin"})
    assert forgotten.status_code == 200 and forgotten.json()["deleted"] == 1
    assert not await _found(client, "cello", "Erin", user="erin")
    await eventually(lambda: _found(client, "cello", "Frank", user="frank"))


async def test_export_then_import_round_trip(
    client: httpx.AsyncClient, registry: TenantRegistry
) -> None:
    await client.post(
        "/v1/memories",
        json={
            "user": "gina",
            "items": [
                {"content": "Gina is allergic to peanuts."},
                {"content": "Gina runs marathons."},
            ],
        },
    )
    exported = await client.get(
        "/v1/memories/export", params={"user": "gina", "include_vectors": "true"}
    )
    assert exported.status_code == 200
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert len(lines) == 2 and all("vector" in line for line in lines)

    other_key, _ = registry.create_key("initech")
    other = {"authorization": f"Bearer {other_key}"}
    imported = await client.post("/v1/memories/import", content=exported.content, headers=other)
    assert imported.status_code == 200 and imported.json()["imported"] == 2
    found = await client.post(
        "/v1/memories/search", json={"query": "peanuts allergy", "user": "gina"}, headers=other
    )
    assert "peanuts" in found.json()["data"][0]["content"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/memories", {"user": "u", "content": ""}, "content"),
        ("/v1/memories", {"user": "u", "content": "x" * 40_000}, "content"),
        ("/v1/memories", {"user": "u", "content": "x", "tier": "forever"}, "tier"),
        (
            "/v1/memories",
            {"user": "u", "content": "x", "created_at": "yesterday-ish"},
            "created_at",
        ),
        ("/v1/memories", {"user": "u"}, None),
        ("/v1/memories/search", {"query": "x", "k": 0}, "k"),
        ("/v1/memories/search", {"query": "x", "k": 1000}, "k"),
        ("/v1/memories/search", {"k": 3}, "query"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str | None
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if param is not None:
        assert error["param"] is not None and param in error["param"], error


async def test_empty_and_huge_queries_do_not_fail(client: httpx.AsyncClient) -> None:
    assert (await _search(client, "   "))["data"] == []
    assert (await _search(client, "word " * 20_000))["data"] == []


async def test_summarize_through_the_upstream(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    await client.post(
        "/v1/memories",
        json={
            "user": "hank",
            "items": [{"content": "Hank likes jazz."}, {"content": "Hank lives in Oslo."}],
        },
    )
    upstream.enqueue(
        httpx.Response(200, json=completion("gpt-4o-mini", "Hank lives in Oslo and likes jazz."))
    )
    response = await client.post(
        "/v1/memories/summarize", json={"user": "hank", "model": "gpt-4o-mini"}
    )
    assert response.status_code == 201, response.text
    summary = response.json()
    assert summary["tier"] == "semantic" and "Oslo" in summary["content"]
    assert len(summary["metadata"]["summarized_from"]) == 2
    prompt = upstream.bodies()[-1]["messages"][-1]["content"]
    assert "Hank likes jazz." in prompt and "Hank lives in Oslo." in prompt
    nothing = await client.post(
        "/v1/memories/summarize", json={"user": "nobody", "model": "gpt-4o-mini"}
    )
    assert nothing.status_code == 404


async def test_memory_api_without_an_engine_is_503(
    settings: Settings, registry: TenantRegistry, tenant_key: str
) -> None:
    disabled = settings.model_copy(update={"memory": MemorySettings(enabled=False)})
    app = build_app(disabled, registry=registry)
    async with in_process(app) as http:
        response = await http.post(
            "/v1/memories/search",
            json={"query": "x"},
            headers={"authorization": f"Bearer {tenant_key}"},
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "memory_unavailable"


async def test_json_is_read_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    """``curl -d`` sends form-encoded headers; the body is still JSON, as OpenAI reads it."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    stored = await client.post(
        "/v1/memories", content=b'{"user": "ivy", "content": "Ivy sails."}', headers=form
    )
    assert stored.status_code == 201, stored.text
    bad = await client.post("/v1/memories/search", content=b'{"query": 5', headers=form)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    client.headers.pop("authorization")
    unauthenticated = await client.post("/v1/memories/search", content=b"{not json")
    assert unauthenticated.status_code == 401  # who you are is checked before what you sent
