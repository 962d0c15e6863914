from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from memory.model import InvalidMemory, Memory, NewMemory, Tier
from memory.store import ModelMismatch
from tests.fakes import FakeEmbedder
from tests.memory.helpers import scope, searchable

FACTS = [
    "Alice's favourite drink is green tea.",
    "Alice works as a marine biologist in Lisbon.",
    "Alice is allergic to peanuts.",
    "Alice plays the cello on weekends.",
]


async def test_store_then_recall(service) -> None:
    stored = await service.store(scope(), [{"content": f} for f in FACTS])
    assert [m.content for m in stored] == FACTS
    assert all(m.tokens > 0 and len(m.content_hash) == 64 for m in stored)
    assert await searchable(service, scope(), "cello", stored[3].id)
    result = await service.search(scope(), "what is alice allergic to peanuts", k=2)
    assert result.items[0].memory.id == stored[2].id
    assert 0.0 < result.confidence <= 1.0
    assert len(result.items) <= 2


async def test_caller_timestamp_metadata_and_tier_are_kept(service) -> None:
    item = NewMemory(
        content="We met in 2019.",
        created_at="2019-05-01T10:00:00Z",
        metadata={"source": "diary", "n": 1},
        tier=Tier.EPISODIC,
    )
    [stored] = await service.store(scope(), [item])
    got = await service.get("acme", stored.id)
    assert got.created_at.year == 2019 and got.metadata == {"source": "diary", "n": 1}
    assert got.tier is Tier.EPISODIC


async def test_hybrid_beats_pure_vector_on_keyword_query(service) -> None:
    distractors = [
        f"what is it that we do about the {w} now"
        for w in ("weather", "garden", "kitchen", "car", "roof", "dog", "bills", "noise")
    ]
    target = "Zephyr checklist lives in the ops wiki."
    stored = await service.store(scope(), [{"content": c} for c in [*distractors, target]])
    query = "what is it that we do about zephyr"
    emb = FakeEmbedder(64)
    sims = emb.embed_batch([m.content for m in stored]) @ emb.embed_batch([query])[0]
    vector_rank = list(np.argsort(-sims)).index(len(stored) - 1)
    assert vector_rank >= 3  # pure vector search buries it
    assert await searchable(service, scope(), query, stored[-1].id)
    result = await service.search(scope(), query, k=3)
    assert result.items[0].memory.id == stored[-1].id


async def test_exact_duplicate_reinforces_instead_of_adding(service) -> None:
    [first] = await service.store(scope(), [{"content": "The door code is 4512."}])
    [again, same_batch] = await service.store(scope(), [{"content": "The door code is 4512."}] * 2)
    assert again.id == first.id == same_batch.id
    items, _ = await service.list_memories("acme", user="alice")
    assert len(items) == 1 and items[0].reinforced >= 1


async def test_near_duplicate_is_superseded_by_the_original(service) -> None:
    [first] = await service.store(scope(), [{"content": "My car is a red Volvo"}])
    await service.list_memories("acme")  # applied
    [near] = await service.store(scope(), [{"content": "my car is a red volvo!"}])
    assert near.id != first.id
    items, _ = await service.list_memories("acme", user="alice")
    assert [m.id for m in items] == [first.id]
    assert (await service.get("acme", near.id)).superseded_by == first.id
    result = await service.search(scope(), "red volvo car", k=5)
    assert [i.memory.id for i in result.items] == [first.id]


async def test_near_duplicates_applied_in_one_batch_end_as_one_live_memory(service) -> None:
    # Neither was stored when the other was acknowledged: the batch itself must catch them.
    texts = ["My car is a red Volvo", "Alice plays the cello.", "my car is a red volvo!"]
    first, cello, near = await service.store(scope(), [{"content": t} for t in texts])
    items, _ = await service.list_memories("acme", user="alice")
    assert sorted(m.id for m in items) == sorted([first.id, cello.id])
    assert (await service.get("acme", near.id)).superseded_by == first.id  # type: ignore[union-attr]
    assert next(m for m in items if m.id == first.id).reinforced == 1


async def test_long_content_is_chunked(service) -> None:
    text = " ".join(f"Chapter {i} describes the voyage to island {i}." for i in range(200))
    stored = await service.store(scope(), [{"content": text}])
    assert len(stored) > 1
    assert all(m.tokens <= 256 for m in stored)
    assert {m.metadata["chunk"]["group"] for m in stored} == {stored[0].id}
    assert await searchable(service, scope(), "voyage island 150", stored[-1].id)


async def test_redaction_happens_before_anything_is_written(service, tmp_path) -> None:
    [m] = await service.store(
        scope(), [{"content": "reach me at bob@example.com, key sk-abcdefghijklmnopqrstu"}]
    )
    assert m.content == "reach me at [EMAIL], key [SECRET]"
    assert m.metadata["redacted"] == {"email": 1, "secret": 1}
    await service.list_memories("acme")
    await service.forget_user("acme", "nobody")  # compaction
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert b"bob@example.com" not in path.read_bytes(), path


async def test_forget_by_id_user_and_session(service) -> None:
    a1 = (await service.store(scope(session="s1"), [{"content": "alpha one fact"}]))[0]
    a2 = (await service.store(scope(session="s2"), [{"content": "alpha two fact"}]))[0]
    a3 = (await service.store(scope(), [{"content": "alpha three fact"}]))[0]
    b1 = (await service.store(scope("bob"), [{"content": "alpha bob fact"}]))[0]
    assert await searchable(service, scope(), "alpha", a3.id)
    assert await service.delete("acme", a3.id, user="bob") is False  # not bob's
    assert await service.delete("acme", a3.id, user="alice") is True
    assert await service.forget_session("acme", "alice", "s1") == 1
    ids = {i.memory.id for i in (await service.search(scope(), "alpha fact", k=10)).items}
    assert ids == {a2.id}
    assert await service.forget_user("acme", "alice") == 1
    assert (await service.search(scope(), "alpha fact", k=10)).items == []
    assert await service.get("acme", a1.id) is None
    assert [i.memory.id for i in (await service.search(scope("bob"), "alpha", k=5)).items] == [
        b1.id
    ]


async def test_update_reembeds_content(service) -> None:
    [m] = await service.store(scope(), [{"content": "the meeting is in room blue"}])
    assert await searchable(service, scope(), "room blue", m.id)
    updated = await service.update(
        "acme",
        m.id,
        content="the meeting moved to the rooftop terrace",
        metadata={"edited": True},
        tier=Tier.SEMANTIC,
    )
    assert updated.id == m.id and updated.tier is Tier.SEMANTIC
    result = await service.search(scope(), "rooftop terrace", k=1)
    assert result.items[0].memory.id == m.id
    assert result.items[0].memory.content.startswith("the meeting moved")
    emb = FakeEmbedder(64)
    [content, query] = emb.embed_batch(
        ["the meeting moved to the rooftop terrace", "rooftop terrace"]
    )
    assert result.items[0].vector == pytest.approx(float(content @ query), abs=1e-5)  # re-embedded
    assert await service.update("acme", m.id, user="mallory", content="x") is None


@pytest.mark.parametrize("with_vectors", [True, False])
async def test_export_import_round_trip(service, make_service, tmp_path, with_vectors) -> None:
    stored = await service.store(
        scope(), [{"content": f, "metadata": {"i": i}} for i, f in enumerate(FACTS)]
    )
    await service.record_usefulness("acme", [stored[0].id], True)
    lines = [json.dumps(r) async for r in service.export("acme", include_vectors=with_vectors)]
    assert len(lines) == len(FACTS)
    assert ("vector" in json.loads(lines[0])) is with_vectors
    other = make_service(tmp_path / "other")
    await other.start()
    try:
        embedder_calls = other.embedder.calls
        assert await other.import_("beta", (json.loads(line) for line in lines)) == len(FACTS)
        items, _ = await other.list_memories("beta", user="alice")
        assert sorted(m.id for m in items) == sorted(m.id for m in stored)
        by_id = {m.id: m for m in items}
        assert by_id[stored[0].id].useful == 1.0 and by_id[stored[1].id].metadata == {"i": 1}
        assert by_id[stored[2].id].created_at == stored[2].created_at
        assert (other.embedder.calls > embedder_calls) is (not with_vectors)
        result = await other.search(scope(tenant="beta"), "cello weekends", k=1)
        assert result.items[0].memory.id == stored[3].id
    finally:
        await other.aclose()


async def test_import_reembeds_when_model_differs(make_service, tmp_path) -> None:
    svc = make_service(tmp_path / "d", embedder=FakeEmbedder(32))
    await svc.start()
    try:
        record = {
            "id": "abc",
            "user": "alice",
            "tier": "long_term",
            "source": "api",
            "content": "kiwi fruit",
            "tokens": 2,
            "content_hash": "h",
            "created_at": "2020-01-01T00:00:00Z",
            "last_used_at": "2020-01-01T00:00:00Z",
            "embedding_model": "other-model",
            "vector": [0.1] * 64,
        }
        assert await svc.import_("acme", [record, {"user": "alice", "content": "plain item"}]) == 2
        result = await svc.search(scope(), "kiwi fruit", k=1)
        assert result.items[0].memory.id == "abc" and result.items[0].vector > 0.99
        with pytest.raises(InvalidMemory) as caught:
            await svc.import_("acme", [{"content": "no user"}])
        assert caught.value.field == "records.0.user"
    finally:
        await svc.aclose()


async def test_an_id_written_twice_in_one_batch_is_one_row_the_last(service) -> None:
    """An import that repeats an id (or two imports of one export, applied in one batch):
    Lance would insert both rows, and every later write of the id would then fail."""
    record = {
        "id": "abc", "user": "alice", "tier": "long_term", "source": "import",
        "content": "Alice likes tea.", "tokens": 4, "content_hash": "h",
        "created_at": "2020-01-01T00:00:00Z", "last_used_at": "2020-01-01T00:00:00Z",
    }  # fmt: skip
    await service.import_("acme", [record, {**record, "content": "Alice likes coffee."}])
    assert [r["content"] async for r in service.export("acme")] == ["Alice likes coffee."]
    await service.import_("acme", [record, {**record, "content": "Alice likes cocoa."}])
    assert [r["content"] async for r in service.export("acme")] == ["Alice likes cocoa."]


async def test_tenant_and_user_isolation_with_crafted_strings(service) -> None:
    crafted = "x' OR '1'='1"
    secret = (await service.store(scope("alice"), [{"content": "alice secret plan"}]))[0]
    own = (await service.store(scope(crafted), [{"content": "crafted user note plan"}]))[0]
    other_tenant = (
        await service.store(scope("alice", tenant="globex"), [{"content": "globex plan"}])
    )[0]
    assert await searchable(service, scope(crafted), "plan", own.id)
    assert [
        i.memory.id for i in (await service.search(scope(crafted), "secret plan", k=10)).items
    ] == [own.id]
    assert await service.get("acme", secret.id, user=crafted) is None
    assert await service.get("globex", secret.id) is None
    assert await service.get("acme", other_tenant.id) is None
    items, _ = await service.list_memories("acme", user=crafted)
    assert [m.id for m in items] == [own.id]
    assert await service.forget_user("acme", crafted) == 1
    assert (await service.get("acme", secret.id)).content == "alice secret plan"
    assert await service.delete("globex", secret.id) is False


async def test_concurrent_writers(service) -> None:
    async def writer(user: str, n: int) -> list[Memory]:
        out = []
        for i in range(n):
            out += await service.store(
                scope(user), [{"content": f"{user} fact number {i} unique{i}"}]
            )
        return out

    results = await asyncio.gather(*(writer(f"user{u}", 15) for u in range(8)))
    for u, stored in enumerate(results):
        items, cursor = await service.list_memories("acme", user=f"user{u}", limit=1000)
        assert cursor is None
        assert sorted(m.id for m in items) == sorted(m.id for m in stored)


async def test_list_pagination(service) -> None:
    stored = await service.store(
        scope(),
        [
            {"content": f"item {i} zz{i}", "created_at": f"2020-01-{i + 1:02d}T00:00:00Z"}
            for i in range(7)
        ],
    )
    seen, cursor = [], None
    while True:
        page, cursor = await service.list_memories("acme", user="alice", cursor=cursor, limit=3)
        seen += page
        if cursor is None:
            break
    assert [m.id for m in seen] == [m.id for m in stored]
    with pytest.raises(InvalidMemory):
        await service.list_memories("acme", cursor="garbage!")


async def test_empty_huge_and_bad_queries(service) -> None:
    [m] = await service.store(scope(), [{"content": "the launch date is march third"}])
    assert await searchable(service, scope(), "launch", m.id)
    assert (await service.search(scope(), "", k=5)).items == []
    assert (await service.search(scope(), "   \n ", k=5)).confidence == 0.0
    huge = "launch date " + "lorem ipsum " * 50_000
    assert (await service.search(scope(), huge, k=5)).items[0].memory.id == m.id
    assert (await service.search(scope("nobody"), "launch", k=5)).items == []
    for bad in ({"k": 0}, {"k": 10_000}, {"k": 5, "max_tokens": 0}):
        with pytest.raises(InvalidMemory) as caught:
            await service.search(scope(), "launch", **bad)
        assert caught.value.field in ("k", "max_tokens")


async def test_bad_items_are_refused_naming_the_field(service) -> None:
    with pytest.raises(InvalidMemory) as caught:
        await service.store(scope(), [{"content": "fine"}, {"content": "x", "tier": "bogus"}])
    assert caught.value.field == "tier" and "item 1" in str(caught.value)
    assert (await service.list_memories("acme"))[0] == []  # nothing of the batch was stored


async def test_usefulness_feedback_and_summary_input(service) -> None:
    stored = await service.store(scope(session="s"), [{"content": f} for f in FACTS])
    assert await service.record_usefulness("acme", [stored[1].id], -1.0) == 1
    assert await service.record_usefulness("acme", [stored[0].id, "missing"], True) == 1
    assert (await service.get("acme", stored[1].id)).not_useful == 1.0
    assert [m.id for m in await service.summary_input("acme", "alice", "s")] == [
        m.id for m in stored
    ]
    await service.store(
        scope(), [{"content": "Alice: tea, Lisbon, peanuts, cello.", "tier": "semantic"}]
    )
    assert len(await service.summary_input("acme", "alice")) == len(FACTS)


async def test_model_or_dimension_mismatch_is_refused(make_service, tmp_path) -> None:
    first = make_service(tmp_path / "d", embedder=FakeEmbedder(64))
    await first.start()
    await first.store(scope(), [{"content": "hello"}])
    await first.aclose()
    second = make_service(tmp_path / "d", embedder=FakeEmbedder(32))
    await second.start()
    try:
        with pytest.raises(ModelMismatch, match="fake-bow-64"):
            await second.store(scope(), [{"content": "again"}])
        with pytest.raises(ModelMismatch):
            await second.search(scope(), "hello")
    finally:
        await second.aclose()
