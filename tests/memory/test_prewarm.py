"""After a start, the busiest users' scopes are loaded before anyone asks for them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from config import Settings
from memory.index import ScopeIndex
from memory.lancedb_store import LanceMemoryStore
from memory.model import Memory
from proxy.keys import TenantRegistry
from tests.conftest import build_app, in_process
from tests.memory.test_shared_table_writes import AT, EMB, _memory
from tests.proxy.test_memories_api import eventually


class CountedLoads(LanceMemoryStore):
    def __init__(self, uri: Path) -> None:
        super().__init__(uri, model_id=EMB.model_id, dimension=EMB.dimension)
        self.loaded: list[tuple[str, str]] = []

    def _load_scope(self, tenant: str, user: str) -> ScopeIndex | None:
        if self._scopes.get(tenant, user) is None:
            self.loaded.append((tenant, user))
        return super()._load_scope(tenant, user)


def _memories(user: str, n: int, days: int) -> list[Memory]:
    at = AT + timedelta(days=days)
    return [
        _memory(i).model_copy(update={"id": f"{user}-{i}", "user": user, "created_at": at,
                                      "last_used_at": at})
        for i in range(n)
    ]  # fmt: skip


async def test_the_most_recently_active_users_are_loaded_while_they_fit(tmp_path: Path) -> None:
    writer = LanceMemoryStore(tmp_path, model_id=EMB.model_id, dimension=EMB.dimension)
    await writer.start()
    for tenant, user, n, days in [
        ("t1", "old", 5, 0), ("t1", "recent", 3, 9), ("t2", "mid", 4, 5), ("t2", "big", 9, 7),
    ]:  # fmt: skip
        memories = [m.model_copy(update={"tenant": tenant}) for m in _memories(user, n, days)]
        await writer.add(tenant, memories, EMB.embed_batch([m.content for m in memories]))
    await writer.touch("t1", ["old-0"])  # used just now: the most recent activity of all
    await writer.aclose()

    restarted = CountedLoads(tmp_path)
    await restarted.start()
    # old (5, used now), recent (3) fit in 8; big (9) does not, mid (4) no longer does.
    assert await restarted.prewarm(8) == (2, 8)
    assert restarted.loaded == [("t1", "old"), ("t1", "recent")]
    assert restarted.cached_rows == 8
    await restarted.aclose()


async def test_a_restarted_server_holds_its_users_scopes_before_any_request(
    settings: Settings, tenant_key: str, registry: TenantRegistry
) -> None:
    def rows_cached(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("memshadow_scope_cache_rows "))
        return float(line.split()[1])

    async with in_process(build_app(settings, registry=registry), tenant_key) as client:
        items = [{"content": f"Fact {n} about the allotment."} for n in range(6)]
        stored = await client.post("/v1/memories", json={"user": "ann", "items": items})
        assert stored.status_code == 201, stored.text

        async def listed() -> bool:
            page = await client.get("/v1/memories", params={"user": "ann"})
            return len(page.json()["data"]) == 6

        await eventually(listed)
    async with in_process(build_app(settings, registry=registry), tenant_key) as client:

        async def prewarmed() -> bool:
            return rows_cached((await client.get("/metrics")).text) == 6

        await eventually(prewarmed)
