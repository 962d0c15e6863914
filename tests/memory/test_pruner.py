"""The retention pruner against a real store: tiers, floors, caps, promotion, the loop."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest

from memory.model import Tier, utcnow
from memory.store import Change
from policies.retention import DEFAULT_RETENTION, RetentionPolicy, TierRetention
from tests.memory.helpers import scope

DAY = 86_400.0


def _ago(days: float) -> str:
    return (utcnow() - timedelta(days=days)).isoformat()


async def _store(service, content: str, tier: Tier, days: float, user: str = "alice") -> str:
    [memory] = await service.store(
        scope(user), [{"content": content, "tier": tier, "created_at": _ago(days)}]
    )
    return memory.id


async def _feedback(service, memory_id: str, useful: bool, times: int) -> None:
    for _ in range(times):
        await service.record_usefulness("acme", [memory_id], useful)


async def _state(service) -> dict[str, dict]:
    return {r["id"]: r async for r in service.export("acme")}


async def test_pruning_respects_tiers(service, caplog: pytest.LogCaptureFixture) -> None:
    failing = await _store(service, "We talked about the leaky tap.", Tier.EPISODIC, 90)
    quiet = await _store(service, "We talked about the weather.", Tier.EPISODIC, 90)
    proven = await _store(service, "Alice takes her coffee black.", Tier.EPISODIC, 2)
    kept = await _store(service, "Alice is allergic to peanuts.", Tier.LONG_TERM, 3000)
    scratch = await _store(service, "Draft reply to the landlord.", Tier.WORKING, 3)
    await _feedback(service, failing, useful=False, times=3)
    await _feedback(service, kept, useful=False, times=20)  # long_term: still never touched
    await _feedback(service, proven, useful=True, times=3)
    caplog.set_level(logging.INFO, logger="memshadow.events")

    report = await service.prune("acme")

    assert (report.archived, report.promoted) == (2, 1)
    state = await _state(service)
    assert state[failing]["archived"] and state[scratch]["archived"]
    assert not state[quiet]["archived"]  # old but not failing: episodic decay alone keeps it
    assert state[proven]["tier"] == "semantic" and not state[proven]["archived"]
    assert state[kept]["tier"] == "long_term" and not state[kept]["archived"]
    messages = [r.getMessage() for r in caplog.records if r.name == "memshadow.events"]
    assert any(m.startswith("memory archived") and failing in m for m in messages)
    assert any(m.startswith("memory promoted") and proven in m for m in messages)


async def test_archived_leave_search_but_stay_in_export(service) -> None:
    failing = await _store(service, "The leaky tap in the kitchen.", Tier.EPISODIC, 120)
    await _feedback(service, failing, useful=False, times=4)
    await service.prune("acme")
    result = await service.search(scope(), "leaky tap kitchen", k=5)
    assert failing not in [item.memory.id for item in result.items]
    assert (await _state(service))[failing]["archived"] is True


async def test_promoted_memory_keeps_its_id_and_is_semantic(service) -> None:
    proven = await _store(service, "Alice's gate code is the year she was born.", Tier.EPISODIC, 1)
    await _feedback(service, proven, useful=True, times=4)
    await service.prune("acme")
    result = await service.search(scope(), "gate code", k=5, tiers=[Tier.SEMANTIC])
    assert [item.memory.id for item in result.items] == [proven]


async def test_caps_archive_the_lowest_activation(make_service) -> None:
    tiers = dict(DEFAULT_RETENTION.tiers)
    tiers["episodic"] = TierRetention(half_life_s=14 * DAY, cap=2, floor=0.1)
    tiers["long_term"] = TierRetention(half_life_s=730 * DAY, cap=1, floor=0.5)  # ignored
    service = make_service(retention=RetentionPolicy(tiers=tiers))
    await service.start()
    try:
        ids = [await _store(service, f"Episode {n} about topic {n}.", Tier.EPISODIC, days)
               for n, days in enumerate([40, 1, 20, 3])]  # fmt: skip
        bob = await _store(service, "Bob's only episode.", Tier.EPISODIC, 50, user="bob")
        lt = [await _store(service, f"Fact {n}.", Tier.LONG_TERM, 10) for n in range(3)]
        report = await service.prune("acme")
        state = await _state(service)
        assert report.archived == 2
        assert {i for i in ids if state[i]["archived"]} == {ids[0], ids[2]}  # the two oldest
        assert not state[bob]["archived"]  # caps are per user
        assert not any(state[i]["archived"] for i in lt)
    finally:
        await service.aclose()


async def test_run_once_is_idempotent(service) -> None:
    failing = await _store(service, "A failing episode.", Tier.EPISODIC, 90)
    proven = await _store(service, "A proven episode.", Tier.EPISODIC, 1)
    await _feedback(service, failing, useful=False, times=3)
    await _feedback(service, proven, useful=True, times=3)
    first = await service.prune("acme")
    before = await _state(service)
    second = await service.prune("acme")
    assert (first.archived, first.promoted) == (1, 1)
    assert (second.archived, second.promoted) == (0, 0)
    assert second.scanned == first.scanned - 1  # the archived one is no longer live
    assert await _state(service) == before


async def test_mark_is_guarded_by_the_tier_the_decision_saw(service) -> None:
    memory_id = await _store(service, "Moved on purpose.", Tier.EPISODIC, 90)
    await service.update("acme", memory_id, tier=Tier.LONG_TERM)  # the user pins it meanwhile
    store = service._store
    changed = await store.mark("acme", {memory_id: Change(archived=True, if_tier=Tier.EPISODIC)})
    assert changed == []
    assert not (await service.get("acme", memory_id)).archived


async def test_unknown_tenant_prunes_nothing(service) -> None:
    report = await service.prune("nobody")
    assert (report.scanned, report.archived, report.promoted) == (0, 0, 0)


async def test_background_loop_prunes_and_stops_promptly(make_service) -> None:
    service = make_service(prune_interval_s=0.05)
    await service.start()
    scratch = await _store(service, "Scratch note from last week.", Tier.WORKING, 7)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await service.get("acme", scratch)).archived:
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await service.aclose()
    assert time.monotonic() - started < 5
    assert (await _reopened(make_service))[scratch]["archived"] is True


async def test_loop_does_not_start_when_disabled(make_service) -> None:
    service = make_service(prune_interval_s=None)
    await service.start()
    try:
        scratch = await _store(service, "Scratch note.", Tier.WORKING, 7)
        await asyncio.sleep(0.2)
        assert not (await service.get("acme", scratch)).archived
    finally:
        await service.aclose()


async def _reopened(make_service) -> dict[str, dict]:
    service = make_service(prune_interval_s=None)
    await service.start()
    try:
        return await _state(service)
    finally:
        await service.aclose()
