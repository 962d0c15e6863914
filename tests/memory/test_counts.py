"""Live counts per tier and the ingestion backlog: what the operator dashboard reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from memory.lancedb_store import LanceMemoryStore
from memory.model import Memory, Tier
from memory.service import MemoryService
from memory.store import Vectors
from tests.memory.helpers import scope


async def test_live_counts_per_tier_are_scoped_to_the_tenant(service: MemoryService) -> None:
    await service.store(scope(), [
        {"content": "Alice keeps bees on the roof.", "tier": "long_term"},
        {"content": "Alice asked about the weather in Porto.", "tier": "episodic"},
        {"content": "Alice prefers window seats.", "tier": "semantic"},
    ])  # fmt: skip
    await service.store(scope("bob"), [{"content": "Bob collects stamps.", "tier": "long_term"}])
    other = [{"content": "Not acme's memory at all.", "tier": "working"}]
    await service.store(scope(tenant="other"), other)
    [near] = await service.store(scope(), [{"content": "alice keeps bees on the roof!"}])
    [gone] = await service.store(scope(), [{"content": "A memory that will be deleted."}])
    await service.list_memories("acme")  # everything acknowledged is applied
    assert await service.delete("acme", gone.id)

    counts = await service.count_live("acme")

    # The near-duplicate is superseded and the deleted one is gone: neither is live.
    assert (await service.get("acme", near.id)).superseded_by is not None  # type: ignore[union-attr]
    assert counts == {Tier.LONG_TERM: 2, Tier.EPISODIC: 1, Tier.SEMANTIC: 1}
    assert await service.count_live("other") == {Tier.WORKING: 1}
    assert await service.count_live("nobody") == {}


class HeldStore(LanceMemoryStore):
    """Holds every write until ``release`` is set, so the backlog can be observed."""

    def __init__(self, uri: Path, release: asyncio.Event) -> None:
        super().__init__(uri, model_id="fake-bow-64", dimension=64)
        self._release = release

    async def add(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        await self._release.wait()
        await super().add(tenant, memories, vectors, new=new)


async def test_backlog_counts_acknowledged_memories_until_they_are_applied(
    make_service: Callable[..., MemoryService], tmp_path: Path
) -> None:
    release = asyncio.Event()
    service = make_service(store=HeldStore(tmp_path / "held", release))
    await service.start()
    try:
        await service.store(scope(), [{"content": "First fact."}, {"content": "Second fact."}])
        assert service.ingest_backlog == 2
        assert await service.count_live("acme") == {}  # not in the store yet
        release.set()
        await service.list_memories("acme")  # waits for the ingestor
        assert service.ingest_backlog == 0
        assert await service.count_live("acme") == {Tier.LONG_TERM: 2}
    finally:
        release.set()
        await service.aclose()
