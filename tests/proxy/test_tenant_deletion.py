"""Offboarding a tenant: ``DELETE /admin/tenants/{name}`` through the public surface."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from config import Settings
from memory.lancedb_store import table_name
from proxy.cli import app as cli
from proxy.keys import TenantRegistry
from tests.conftest import ADMIN_KEY, LoopbackServer, build_app, in_process
from tests.fakes import FakeUpstream
from tests.proxy.test_feedback import _ask, _store
from tests.proxy.test_memories_api import eventually
from tests.proxy.test_scale_out import Fleet, _found, fleet  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("upstream")
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
TEA = "Ann drinks green tea every morning."


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _search(client: httpx.AsyncClient, key: str, query: str, user: str) -> list[str]:
    response = await client.post(
        "/v1/memories/search", json={"query": query, "user": user}, headers=_bearer(key)
    )
    assert response.status_code == 200, response.text
    return [item["content"] for item in response.json()["data"]]


async def test_a_deleted_tenant_loses_its_keys_memories_and_calibration(
    settings: Settings, registry: TenantRegistry, upstream: FakeUpstream
) -> None:
    key, _ = registry.create_key("globex")
    second, _ = registry.create_key("globex")
    other, _ = registry.create_key("acme")
    table = settings.data_dir / "memory" / "lancedb" / f"{table_name('globex')}.lance"
    async with in_process(build_app(settings, registry=registry), key) as client:
        await _store(client, "ann", TEA, "Ann's bike is red.")
        await _store(client, "bob", "Bob plays the cello.")
        client.headers.update(_bearer(other))
        await _store(client, "ann", "Acme's Ann takes the 8:15 train.")
        client.headers.update(_bearer(key))
        await _ask(client, upstream, "ann", "What tea does Ann drink?", "cmpl-g1")
        feedback = await client.post(
            "/v1/feedback", json={"completion_id": "cmpl-g1", "useful": True}
        )
        assert feedback.status_code == 200
        assert (await client.get("/v1/calibration")).json()["outcomes"] > 0
        assert table.is_dir()

        deleted = await client.delete("/admin/tenants/globex", headers=ADMIN)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {
            "id": "globex", "object": "tenant.deleted", "deleted": True,
            "keys_revoked": 2, "memories_deleted": 3,
        }  # fmt: skip

        for old in (key, second):
            refused = await client.get("/v1/memories", headers=_bearer(old))
            assert refused.status_code == 401
            assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert not table.exists()  # the files, not only the rows
        assert "globex" not in {
            t["id"] for t in (await client.get("/admin/tenants", headers=ADMIN)).json()["data"]
        }
        # Another tenant keeps everything.
        assert await _search(client, other, "train", "ann") == ["Acme's Ann takes the 8:15 train."]

        # A tenant created again under the name starts empty.
        fresh = (await client.post("/admin/keys", json={"tenant": "globex"}, headers=ADMIN)).json()
        assert await _search(client, fresh["key"], "What tea does Ann drink?", "ann") == []
        listed = await client.get("/v1/memories", headers=_bearer(fresh["key"]))
        assert listed.json()["data"] == []
        calibration = await client.get("/v1/calibration", headers=_bearer(fresh["key"]))
        assert calibration.json()["outcomes"] == 0


async def test_deleting_an_unknown_tenant_is_404_and_needs_the_admin_key(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    unknown = await client.delete("/admin/tenants/nobody", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "tenant_id"
    for authorization in ("", f"Bearer {tenant_key}"):
        refused = await client.delete(
            "/admin/tenants/acme", headers={"authorization": authorization}
        )
        assert refused.status_code == 401
    assert (await client.get("/v1/memories")).status_code == 200  # acme untouched


async def test_a_tenant_deleted_via_a_leaves_nothing_in_bs_ram(fleet: Fleet) -> None:  # noqa: F811
    await fleet.a.post("/v1/memories", json={"user": "ann", "content": TEA})
    # B has ann's scope cached.
    await eventually(lambda: _found(fleet.b, "What tea does Ann drink?", TEA), seconds=5)
    deleted = await fleet.a.delete("/admin/tenants/acme", headers=ADMIN)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["memories_deleted"] == 1
    # Created again with a fresh key, through A: B, asked first, has nothing of the old one.
    fresh = (await fleet.a.post("/admin/keys", json={"tenant": "acme"}, headers=ADMIN)).json()
    assert await _search(fleet.b, fresh["key"], "What tea does Ann drink?", "ann") == []


def test_the_cli_deletes_a_tenant_through_the_running_server(
    settings: Settings, registry: TenantRegistry
) -> None:
    key, _ = registry.create_key("globex")
    with LoopbackServer(build_app(settings, registry=registry)) as server:
        stored = httpx.post(
            f"{server.url}/v1/memories", json={"content": TEA}, headers=_bearer(key)
        )
        assert stored.status_code == 201
        command = ["tenants", "delete", "globex", "--url", server.url, "--admin-key", ADMIN_KEY]
        declined = CliRunner().invoke(cli, command, input="n\n")
        assert declined.exit_code == 1  # aborted: nothing deleted
        assert httpx.get(f"{server.url}/v1/memories", headers=_bearer(key)).status_code == 200

        done = CliRunner().invoke(cli, [*command, "--yes"])
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == "deleted tenant globex: keys revoked 1, memories deleted 1"
        assert httpx.get(f"{server.url}/v1/memories", headers=_bearer(key)).status_code == 401

        again = CliRunner().invoke(cli, [*command, "--yes"])
        assert again.exit_code == 1
        assert "globex" in again.stderr  # the server's 404, in one line
