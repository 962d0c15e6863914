"""Feedback on a memory must not cost it its neighbour context (its row in the index)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory.index import ScopeIndex
from memory.model import Memory, Source, Tier, content_hash
from tests.fakes import FakeEmbedder

EMB = FakeEmbedder()


def _memory(n: int) -> Memory:
    text = f"Turn {n} of the conversation about kayaks."
    at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return Memory(
        id=f"m{n}", tenant="t", user="u", tier=Tier.EPISODIC, source=Source.API, content=text,
        tokens=9, content_hash=content_hash(text), created_at=at, last_used_at=at,
    )  # fmt: skip


def test_credited_memories_keep_their_row_and_a_changed_text_moves() -> None:
    index = ScopeIndex(EMB.dimension)
    memories = [_memory(n) for n in range(5)]
    index.upsert(memories, EMB.embed_batch([m.content for m in memories]))
    row = index._row_of["m2"]

    credited = memories[2].model_copy(update={"useful": 1.0, "tier": Tier.SEMANTIC})
    index.upsert([credited], EMB.embed_batch([credited.content]))
    assert index._row_of["m2"] == row
    assert index.get("m2") == credited

    edited = memories[2].model_copy(update={"content": "Now about canoes.", "content_hash": "x"})
    index.upsert([edited], EMB.embed_batch([edited.content]))
    assert index._row_of["m2"] != row and index.get("m2") == edited
