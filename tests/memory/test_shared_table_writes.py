"""Two replicas' stores changing the same memories of one shared table at the same time.

Each store commits from its own writer thread, as replicas do; none of their changes may
overwrite another's (a credit, a reinforcement, an archive, a supersession).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory.lancedb_store import LanceMemoryStore
from memory.model import Memory, Source, Tier, content_hash
from memory.peers import TableChange
from memory.store import Change, ScopeFilter
from tests.fakes import FakeEmbedder

EMB = FakeEmbedder(32)
AT = datetime(2025, 3, 1, tzinfo=UTC)
ROUNDS = 12


class _Unannounced:
    """A peer feed that carries nothing: the stores share tables, read at their latest."""

    async def publish(self, change: TableChange) -> None:
        return None

    def subscribe(
        self, on_change: Callable[[TableChange], None], on_gap: Callable[[], None]
    ) -> None:
        return None


def _memory(n: int, tier: Tier = Tier.EPISODIC) -> Memory:
    text = f"note {n} about the allotment"
    return Memory(
        id=f"m{n}", tenant="t", user="ann", tier=tier, source=Source.API, content=text,
        tokens=5, content_hash=content_hash(text), created_at=AT, last_used_at=AT,
    )  # fmt: skip


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[LanceMemoryStore, LanceMemoryStore]]:
    stores = [
        LanceMemoryStore(
            tmp_path, model_id=EMB.model_id, dimension=EMB.dimension, peers=_Unannounced()
        )
        for _ in range(2)
    ]
    for store in stores:
        await store.start()
    memories = [_memory(n) for n in range(3)]
    await stores[0].add("t", memories, EMB.embed_batch([m.content for m in memories]), new=True)
    yield stores[0], stores[1]
    for store in stores:
        await store.aclose()


async def _stored(store: LanceMemoryStore, memory_id: str) -> Memory:
    found = await store.get("t", memory_id)
    assert found is not None
    return found[0]


async def test_credits_from_two_replicas_at_once_all_count(
    replicas: tuple[LanceMemoryStore, LanceMemoryStore],
) -> None:
    a, b = replicas

    async def credit(store: LanceMemoryStore, **counts: float) -> None:
        for _ in range(ROUNDS):
            await store.touch("t", ["m0", "m1"], **counts)  # type: ignore[arg-type]

    await asyncio.gather(credit(a, useful=1.0), credit(b, not_useful=0.5), credit(b, reinforced=1))
    for memory_id in ("m0", "m1"):
        memory = await _stored(a, memory_id)
        assert (memory.useful, memory.not_useful, memory.reinforced) == (
            ROUNDS, ROUNDS * 0.5, ROUNDS
        )  # fmt: skip
        assert memory.last_used_at > AT


async def test_an_archive_and_credits_at_once_both_land(
    replicas: tuple[LanceMemoryStore, LanceMemoryStore],
) -> None:
    a, b = replicas

    async def credit() -> None:
        for _ in range(ROUNDS):
            await a.touch("t", ["m0"], useful=1.0)

    async def archive() -> list[str]:
        await asyncio.sleep(0.01)  # amid the credits
        return await b.mark("t", {"m0": Change(archived=True), "m2": Change(tier=Tier.SEMANTIC)})

    _, changed = await asyncio.gather(credit(), archive())
    assert sorted(changed) == ["m0", "m2"]
    archived = await _stored(a, "m0")
    assert archived.archived and archived.useful == ROUNDS
    assert (await _stored(a, "m2")).tier == Tier.SEMANTIC


async def test_a_change_decided_on_a_stale_snapshot_is_not_applied(
    replicas: tuple[LanceMemoryStore, LanceMemoryStore],
) -> None:
    a, b = replicas
    assert await a.mark("t", {"m0": Change(superseded_by="m1")}) == ["m0"]
    # B decided to archive m0 and to promote m1 before it saw A's changes.
    assert await b.mark("t", {"m1": Change(tier=Tier.SEMANTIC)}) == ["m1"]
    stale = {"m0": Change(archived=True), "m1": Change(tier=Tier.LONG_TERM, if_tier=Tier.EPISODIC)}
    assert await b.mark("t", stale) == []
    superseded, promoted = await _stored(a, "m0"), await _stored(a, "m1")
    assert superseded.superseded_by == "m1" and not superseded.archived
    assert promoted.tier == Tier.SEMANTIC


async def test_a_cached_scope_sees_its_own_credit_at_once(
    replicas: tuple[LanceMemoryStore, LanceMemoryStore],
) -> None:
    a, _ = replicas
    query = "allotment note"
    scope = ScopeFilter("ann")
    await a.candidates("t", EMB.embed_batch([query])[0], query, scope, 10)  # cached now
    await a.touch("t", ["m1"], useful=2.0)
    await a.mark("t", {"m2": Change(archived=True)})
    found = await a.candidates("t", EMB.embed_batch([query])[0], query, scope, 10)
    by_id = {m.id: m for m in found.memories}
    assert by_id["m1"].useful == 2.0
    assert "m2" not in by_id


async def test_an_edit_keeps_what_was_credited_meanwhile_and_never_revives_a_forgotten_memory(
    replicas: tuple[LanceMemoryStore, LanceMemoryStore],
) -> None:
    a, b = replicas
    read_before = await _stored(a, "m0")  # the edit is decided on this read
    await b.touch("t", ["m0"], useful=3.0)
    text = "note 0 about the allotment, moved to plot 7"
    edited = read_before.model_copy(
        update={"content": text, "content_hash": content_hash(text), "metadata": {"plot": 7}}
    )
    revised = await a.revise("t", edited, EMB.embed_batch([text])[0])
    assert revised is not None and revised.content == text and revised.useful == 3.0
    stored, vector = await a.get("t", "m0") or pytest.fail("m0 is gone")
    assert (stored.content, stored.metadata, stored.useful) == (text, {"plot": 7}, 3.0)
    assert vector.tolist() == pytest.approx(EMB.embed_batch([text])[0].tolist())

    gone = await _stored(a, "m1")
    assert await b.delete("t", ["m1"]) == 1
    assert await a.revise("t", gone.model_copy(update={"tier": Tier.SEMANTIC}), None) is None
    assert await a.get("t", "m1") is None
