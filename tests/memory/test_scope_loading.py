"""A scope loaded from the table in one batch is the scope its writes built, one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory.index import ScopeIndex
from memory.model import Memory, Scope, Source, Tier, content_hash
from tests.fakes import FakeEmbedder

EMB = FakeEmbedder(64)
TOPICS = ["kayak", "cello", "peanuts", "Lisbon", "garden", "flight", "budget", "doctor"]


def _memory(n: int, *, session: str | None = None, text: str | None = None) -> Memory:
    first, second = TOPICS[n % 8], TOPICS[n * 3 % 8]  # some turns name one topic twice
    content = text or f"Turn {n}: talked about the {first} and the {second} again."
    at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    return Memory(
        id=f"m{n}", tenant="t", user="u", session=session or f"s{n // 10}",
        tier=list(Tier)[n % 4], source=Source.IMPORT, content=content, tokens=12,
        content_hash=content_hash(content), created_at=at, last_used_at=at,
    )  # fmt: skip


def _searches(index: ScopeIndex) -> list[tuple[list[str], list[float], list[float]]]:
    out = []
    for query in [*TOPICS, "kayak cello", "what about the garden budget", "nothing matches"]:
        for session in (None, "s2"):
            found = index.search(
                EMB.embed_batch([query])[0], query, session=session, tiers=None, limit=12
            )
            out.append(
                ([m.id for m in found.memories], found.vector_sim.tolist(), found.keyword.tolist())
            )
    return out


def test_one_batch_searches_exactly_like_writes_one_by_one() -> None:
    memories = [_memory(n) for n in range(900)]
    # The batch also replaces a memory it added earlier (the same id twice), as a load
    # followed by a write might, and the later version wins in both indexes.
    replaced = _memory(7, text="Turn 7, corrected: the kayak was sold.")
    batch = [*memories, replaced]
    vectors = EMB.embed_batch([m.content for m in batch])

    at_once = ScopeIndex(EMB.dimension)
    at_once.upsert(batch, vectors)
    one_by_one = ScopeIndex(EMB.dimension)
    for memory, vector in zip(batch, vectors, strict=True):
        one_by_one.upsert([memory], vector[None, :])

    assert at_once.live_count == one_by_one.live_count == 900
    assert at_once.get("m7") == replaced
    assert _searches(at_once) == _searches(one_by_one)
    # And after a removal large enough to rebuild both from their live rows.
    for index in (at_once, one_by_one):
        index.remove([f"m{n}" for n in range(0, 900, 2)])
    assert at_once.rows == one_by_one.rows == 450
    assert _searches(at_once) == _searches(one_by_one)


async def test_a_scope_reloaded_from_disk_keeps_timestamps_to_the_microsecond(
    make_service,
) -> None:
    first = make_service()
    await first.start()
    scope = Scope(tenant="acme", user="ann")
    moments = [
        "1969-07-20T20:17:40.123456Z",  # before the epoch
        "2019-05-01T10:00:00.000001+02:00",  # another offset, kept as the same instant
    ]
    stored = await first.store(
        scope, [{"content": f"Memory {i} about kayaks.", "created_at": at}
                for i, at in enumerate(moments)]
    )  # fmt: skip
    await first.aclose()

    second = make_service()  # what a restarted proxy sees: the scope is read from the table
    await second.start()
    try:
        found = await second.search(scope, "kayaks", k=5)
        by_id = {item.memory.id: item.memory for item in found.items}
        for memory in stored:
            assert by_id[memory.id].created_at == memory.created_at
            assert by_id[memory.id].last_used_at == memory.last_used_at
            got = await second.get("acme", memory.id)
            assert got is not None and got.created_at == memory.created_at
        assert stored[0].created_at == datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC)
        assert stored[1].created_at == datetime(2019, 5, 1, 8, 0, 0, 1, tzinfo=UTC)
    finally:
        await second.aclose()
