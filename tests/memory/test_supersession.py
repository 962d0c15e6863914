"""Supersession through the engine: newer first-person facts hide older contradicting ones."""

from __future__ import annotations

import logging

import pytest

from memory.model import Source, Tier
from tests.memory.helpers import scope, searchable, unsearchable


async def _export(service, user: str = "alice") -> dict[str, dict]:
    return {r["id"]: r async for r in service.export("acme", user=user)}


async def test_porto_wins_over_lyon(service, caplog: pytest.LogCaptureFixture) -> None:
    [lyon] = await service.store(
        scope(), [{"content": "I live in Lyon.", "created_at": "2024-01-01T00:00:00Z"}]
    )
    await service.store(scope(), [{"content": "Alice likes hiking in the Alps."}])
    caplog.set_level(logging.INFO, logger="memshadow.events")
    [porto] = await service.store(
        scope(),
        [
            {
                "content": "User: I moved to Porto.",
                "tier": Tier.EPISODIC,
                "source": Source.CAPTURE,
                "metadata": {"role": "user"},
            }
        ],
    )
    assert await searchable(service, scope(), "where does alice live porto", porto.id)
    assert await unsearchable(service, scope(), "where do I live? Lyon or Porto", lyon.id)
    result = await service.search(scope(), "where do I live? Lyon or Porto", k=10)
    ids = [item.memory.id for item in result.items]
    assert porto.id in ids and lyon.id not in ids
    exported = await _export(service)
    assert exported[lyon.id]["superseded_by"] == porto.id  # kept, with the pointer
    assert exported[porto.id]["superseded_by"] is None
    assert (await service.get("acme", lyon.id)).superseded_by == porto.id
    events = [r for r in caplog.records if r.name == "memshadow.events"]
    assert any(
        r.getMessage().startswith("memory superseded") and lyon.id in r.getMessage() for r in events
    )


async def test_older_imported_fact_does_not_supersede_a_newer_one(service) -> None:
    [porto] = await service.store(
        scope(), [{"content": "I moved to Porto.", "created_at": "2024-06-01T00:00:00Z"}]
    )
    await service.import_(
        "acme",
        [{"user": "alice", "content": "I live in Lyon.", "created_at": "2020-01-01T00:00:00Z"}],
    )
    exported = await _export(service)
    lyon = next(r for r in exported.values() if r["content"] == "I live in Lyon.")
    assert exported[porto.id]["superseded_by"] is None
    assert lyon["superseded_by"] == porto.id  # the stale one is the one hidden
    result = await service.search(scope(), "live Lyon Porto", k=10)
    assert [i.memory.id for i in result.items] == [porto.id]


async def test_same_value_different_user_and_assistant_turns_do_not_supersede(service) -> None:
    stored = await service.store(scope(), [
        {"content": "I live in Lyon.", "created_at": "2024-01-01T00:00:00Z"},
        {"content": "My favourite colour is blue.", "created_at": "2024-01-01T00:00:00Z"},
    ])  # fmt: skip
    await service.store(scope(), [
        {"content": "User: I'm living in Lyon with my wife."},          # same value
        {"content": "Assistant: You moved to Porto, right?"},            # not the user
        {"content": "I moved to Porto.", "metadata": {"role": "assistant"}},
        {"content": "My favourite food is pizza."},                      # another slot
    ])  # fmt: skip
    await service.store(scope(user="bob"), [{"content": "I moved to Porto."}])  # another user
    exported = await _export(service)
    assert all(exported[m.id]["superseded_by"] is None for m in stored)


async def test_newest_statement_in_one_batch_wins(service) -> None:
    stored = await service.store(scope(), [
        {"content": "I work at Acme.", "created_at": "2023-01-01T00:00:00Z"},
        {"content": "I joined Globex as a designer.", "created_at": "2024-01-01T00:00:00Z"},
        {"content": "I work at Initech now.", "created_at": "2023-06-01T00:00:00Z"},
    ])  # fmt: skip
    exported = await _export(service)
    by_content = {r["content"]: r for r in exported.values()}
    globex = stored[1].id
    assert by_content["I joined Globex as a designer."]["superseded_by"] is None
    assert by_content["I work at Acme."]["superseded_by"] is not None
    assert by_content["I work at Initech now."]["superseded_by"] == globex


async def test_contradicting_near_duplicates_are_not_merged(make_service) -> None:
    service = make_service(near_duplicate=0.5)  # bag-of-words: the two share most words
    await service.start()
    try:
        [lyon] = await service.store(
            scope(), [{"content": "I live in Lyon.", "created_at": "2024-01-01T00:00:00Z"}]
        )
        [porto] = await service.store(scope(), [{"content": "I live in Porto."}])
        exported = await _export(service)
        assert exported[porto.id]["superseded_by"] is None
        assert exported[lyon.id]["superseded_by"] == porto.id
    finally:
        await service.aclose()


async def test_supersession_survives_restart_and_replay_is_idempotent(
    make_service, tmp_path
) -> None:
    service = make_service()
    await service.start()
    [lyon] = await service.store(
        scope(), [{"content": "I live in Lyon.", "created_at": "2024-01-01T00:00:00Z"}]
    )
    [porto] = await service.store(scope(), [{"content": "I moved to Porto."}])
    await service.aclose()
    again = make_service()
    await again.start()
    try:
        exported = await _export(again)
        assert exported[lyon.id]["superseded_by"] == porto.id
        result = await again.search(scope(), "Lyon Porto live moved", k=10)
        assert [i.memory.id for i in result.items] == [porto.id]
    finally:
        await again.aclose()
