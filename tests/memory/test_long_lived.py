"""Cached scopes are kept out of full garbage collections, without keeping garbage alive."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory.lancedb_store import LanceMemoryStore
from memory.model import Memory, Source, Tier, content_hash
from memory.store import ScopeFilter
from tests.fakes import FakeEmbedder

EMB = FakeEmbedder(32)
AT = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()


def _memories(user: str, n: int) -> list[Memory]:
    return [
        Memory(
            id=f"{user}-{i}", tenant="t", user=user, tier=Tier.EPISODIC, source=Source.IMPORT,
            content=(text := f"{user} note {i} about the allotment"), tokens=6,
            content_hash=content_hash(text), created_at=AT, last_used_at=AT,
        )
        for i in range(n)
    ]  # fmt: skip


async def _store(
    tmp_path: Path, settle_rows: int | None, users: dict[str, int]
) -> LanceMemoryStore:
    store = LanceMemoryStore(
        tmp_path / "lancedb", model_id=EMB.model_id, dimension=EMB.dimension,
        settle_rows=settle_rows,
    )  # fmt: skip
    await store.start()
    for user, n in users.items():
        memories = _memories(user, n)
        await store.add("t", memories, EMB.embed_batch([m.content for m in memories]), new=True)
    return store


async def _recalled(store: LanceMemoryStore, user: str) -> list[Memory]:
    """The scope's own Memory objects, through a recall (the first one loads the scope)."""
    query = "allotment note"
    vector = EMB.embed_batch([query])[0]
    found = await store.candidates("t", vector, query, ScopeFilter(user), 20)
    assert found.memories
    return found.memories


def _seen_by_collector(objects: list[Memory]) -> int:
    tracked = {id(o) for o in gc.get_objects()}
    return sum(id(o) in tracked for o in objects)


async def test_a_loaded_scope_leaves_the_collectors_sight(tmp_path: Path) -> None:
    plain = await _store(tmp_path / "plain", None, {"ann": 300})
    settled = await _store(tmp_path / "settled", 200, {"bob": 300})
    try:
        unsettled = await _recalled(plain, "ann")
        assert _seen_by_collector(unsettled) == len(unsettled)
        frozen = gc.get_freeze_count()
        loaded = await _recalled(settled, "bob")
        assert _seen_by_collector(loaded) == 0
        assert gc.get_freeze_count() >= frozen + 300
    finally:
        await plain.aclose()
        await settled.aclose()


async def test_a_forgotten_scope_is_freed_although_frozen(tmp_path: Path) -> None:
    store = await _store(tmp_path, 200, {"cy": 300})
    try:
        await _recalled(store, "cy")
        scope = weakref.ref(store._scopes.get("t", "cy"))  # type: ignore[arg-type]
        assert scope() is not None and gc.get_freeze_count() > 0
        gc.disable()  # only reference counting may free it: a scope holds no cycle
        assert await store.delete_scope("t", "cy", None) == 300
        assert scope() is None
    finally:
        await store.aclose()


async def test_garbage_cycles_are_collected_before_a_freeze(tmp_path: Path) -> None:
    store = await _store(tmp_path, 200, {"di": 300})
    try:

        class Node:
            other: Node

        a, b = Node(), Node()
        a.other, b.other = b, a
        cycle = weakref.ref(a)
        gc.disable()  # no automatic collection may take it first
        del a, b
        await _recalled(store, "di")  # loads 300 rows: a settle
        assert gc.get_freeze_count() > 0
        assert cycle() is None
    finally:
        await store.aclose()
