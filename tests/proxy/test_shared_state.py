"""The shared-state contract, held by both implementations (Redis: a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.errors import SharedStateUnavailable
from proxy.metrics import Metrics
from proxy.shared_state import InProcessState, RedisState, SharedState
from tests.conftest import RedisServer


@pytest.fixture(params=["in-process", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    if request.param == "in-process":
        yield InProcessState()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisState(server.url, Metrics())
    await redis.start()
    yield redis
    await redis.aclose()


async def test_a_field_is_claimed_once_and_can_be_given_back(state: SharedState) -> None:
    assert await state.claim("k", {"a": "1", "b": "2"}, 60) == ["a", "b"]
    assert await state.claim("k", {"b": "3", "c": "4"}, 60) == ["c"]
    assert await state.fields("k") == {"a": "1", "b": "2", "c": "4"}
    await state.release("k", ["a"])
    assert await state.claim("k", {"a": "5"}, 60) == ["a"]
    assert await state.fields("missing") == {}


async def test_concurrent_additions_are_never_lost(state: SharedState) -> None:
    await asyncio.gather(*(state.add("totals", {"n": 1.0, "w": 0.5}) for _ in range(50)))
    assert await state.add("totals", {"n": 0.0}) == {"n": 50.0, "w": 25.0}


async def test_swap_returns_the_value_it_replaced(state: SharedState) -> None:
    assert await state.swap("last", b"one", 60) is None
    assert await state.swap("last", b"two", 60) == b"one"
    assert await state.get("last") == b"two"
    assert await state.get("never set") is None


async def test_keys_expire_after_their_ttl(state: SharedState) -> None:
    await state.claim("short", {"a": "1"}, 0.05)
    await state.swap("value", b"x", 0.05)
    await asyncio.sleep(0.15)
    assert await state.fields("short") == {}
    assert await state.get("value") is None
    assert await state.swap("value", b"y", 60) is None


def test_in_process_evicts_expiring_keys_only() -> None:
    state = InProcessState(max_keys=2)

    async def fill() -> dict[str, dict[str, str]]:
        await state.add("calibration", {"n": 1.0})  # no TTL: never evicted
        for name in ("r1", "r2", "r3"):
            await state.claim(name, {"f": "1"}, 60)
        return {k: await state.fields(k) for k in ("calibration", "r1", "r2", "r3")}

    found = asyncio.run(fill())
    assert found["calibration"] == {"n": "1.0"} and found["r1"] == {}
    assert found["r2"] == found["r3"] == {"f": "1"}


async def _listening(*states: RedisState) -> None:
    for _ in range(200):
        if all(s.healthy for s in states):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not subscribed in time")


async def test_broadcasts_reach_the_other_replicas_only(redis_server: RedisServer) -> None:
    one, two = RedisState(redis_server.url, Metrics()), RedisState(redis_server.url, Metrics())
    heard: dict[str, list[bytes]] = {"one": [], "two": []}
    one.subscribe("news", heard["one"].append, lambda: None)
    two.subscribe("news", heard["two"].append, lambda: None)
    two.subscribe("other", lambda message: heard["two"].append(b"wrong channel"), lambda: None)
    await one.start()
    await two.start()
    try:
        await _listening(one, two)
        await one.publish("news", b"hello")
        for _ in range(100):
            if heard["two"]:
                break
            await asyncio.sleep(0.01)
        assert heard == {"one": [], "two": [b"hello"]}
    finally:
        await one.aclose()
        await two.aclose()


async def test_an_outage_fails_fast_and_ends_with_a_gap(redis_server: RedisServer) -> None:
    metrics = Metrics()
    state = RedisState(redis_server.url, metrics, retry_s=0.1)
    gaps: list[bool] = []
    state.subscribe("news", lambda message: None, lambda: gaps.append(True))
    await state.start()
    try:
        await _listening(state)
        assert metrics.registry.get_sample_value("memshadow_shared_state_up") == 1
        redis_server.stop()
        with pytest.raises(SharedStateUnavailable):
            await state.claim("k", {"a": "1"}, 60)
        assert not state.healthy
        assert metrics.registry.get_sample_value("memshadow_shared_state_up") == 0
        assert (
            metrics.registry.get_sample_value(
                "memshadow_shared_state_errors_total", {"op": "claim"}
            )
            == 1
        )
        redis_server.start()
        await _listening(state)
        assert gaps == [True]
        assert await state.claim("k", {"a": "1"}, 60) == ["a"]
    finally:
        await state.aclose()
