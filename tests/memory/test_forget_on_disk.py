"""Forget: a forgotten memory is gone from search at once and from disk after compaction.

Every byte under the data directory is read (Lance data, deletion and manifest files of
every version kept, the write-ahead log), so neither an old table version nor a WAL segment
may still hold the text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.service import MemoryService
from tests.memory.helpers import scope, searchable

KEPT = [f"Bob's note {i}: the quarterly report covers region {i}." for i in range(40)]


def on_disk(data_dir: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("how", ["id", "session", "user"])
async def test_forgotten_content_leaves_search_and_disk(
    service: MemoryService, tmp_path: Path, how: str
) -> None:
    data_dir = tmp_path / "data"
    secret = "Alice's locker code is zebra-4417-quasar."
    kept = await service.store(scope("bob"), [{"content": t} for t in KEPT])
    [forgotten] = await service.store(scope(session="s1"), [{"content": secret}])
    await service.store(scope(), [{"content": "Alice likes long walks by the river."}])
    assert await searchable(service, scope(), "locker code zebra", forgotten.id)
    await service.list_memories("acme")  # everything acknowledged is applied
    assert on_disk(data_dir, secret), "the test must see the text on disk before the forget"

    if how == "id":
        assert await service.delete("acme", forgotten.id, user="alice")
    elif how == "session":
        assert await service.forget_session("acme", "alice", "s1") == 1
    else:
        assert await service.forget_user("acme", "alice") == 2

    result = await service.search(scope(), "locker code zebra", k=10)
    assert forgotten.id not in {item.memory.id for item in result.items}
    await service.compact("acme")
    assert on_disk(data_dir, secret) == []
    # Bob's memories, in the same table and fragments, are all still there.
    listed, _ = await service.list_memories("acme", user="bob", limit=100)
    assert {m.id for m in listed} == {m.id for m in kept}
    assert await searchable(service, scope("bob"), "quarterly report region 7", kept[7].id)
