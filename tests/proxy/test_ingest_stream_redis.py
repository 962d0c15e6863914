"""The ingestion stream on a real redis-server: leases, delivery, claims, acks, positions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis import Redis as BlockingRedis

from memory.stream import Position, StreamUnavailable
from proxy.ingest_stream import RedisIngestStream
from proxy.metrics import Metrics
from proxy.shared_state import RedisState
from tests.conftest import RedisServer


@pytest.fixture
async def stream(redis_server: RedisServer) -> AsyncIterator[RedisIngestStream]:
    state = RedisState(redis_server.url, Metrics(), retry_s=0.05)
    await state.start()
    yield RedisIngestStream(state)
    await state.aclose()


def _raw(server: RedisServer) -> BlockingRedis:
    return BlockingRedis(port=server.port)


async def test_one_holder_at_a_time_and_the_lease_expires(
    stream: RedisIngestStream, redis_server: RedisServer
) -> None:
    assert await stream.hold(["t", "u"], "a", 5.0) == {"t", "u"}
    assert await stream.hold(["t"], "b", 5.0) == set()
    assert await stream.hold(["t"], "a", 5.0) == {"t"}  # renewed by its holder
    _raw(redis_server).pexpire("memshadow:ingest-lease:t", 1)  # as if a never renewed it
    await asyncio.sleep(0.01)
    assert await stream.hold(["t"], "b", 5.0) == {"t"}
    assert await stream.hold(["t"], "a", 5.0) == set()


async def test_entries_are_delivered_once_claimed_after_a_death_and_applied_once(
    stream: RedisIngestStream,
) -> None:
    first = await stream.append("t", b"one")
    second = await stream.append("t", b"two")
    assert await stream.positions(["t"]) == {"t": Position(applied=None, head=second)}
    await stream.hold(["t"], "a", 5.0)
    read = await stream.read(["t"], "a", 10, 0.01)
    assert [(e.id, e.payload) for e in read] == [(first, b"one"), (second, b"two")]
    assert await stream.read(["t"], "a", 10, 0.01) == []  # delivered: not again
    # a dies holding both; b claims them, oldest first, and acks after applying
    claimed = await stream.claim("t", "b", 10)
    assert [e.id for e in claimed] == [first, second]
    await stream.ack("t", [e.id for e in claimed])
    assert await stream.claim("t", "b", 10) == []
    assert await stream.positions(["t"]) == {"t": Position(applied=second, head=None)}


async def test_the_applied_position_only_rises(stream: RedisIngestStream) -> None:
    ids = [await stream.append("t", b"x") for _ in range(3)]
    await stream.hold(["t"], "a", 5.0)
    await stream.read(["t"], "a", 10, 0.01)
    await stream.ack("t", ids)
    await stream.ack("t", ids[:1])  # a late ack of a stalled former holder
    assert (await stream.positions(["t"]))["t"].applied == ids[-1]


async def test_an_idle_release_never_strands_an_entry(
    stream: RedisIngestStream, redis_server: RedisServer
) -> None:
    entry = await stream.append("t", b"x")
    await stream.hold(["t"], "a", 5.0)
    assert "t" in await stream.waiting()
    assert not await stream.release("t", "b", idle_only=False)  # not b's to give
    assert not await stream.release("t", "a", idle_only=True)  # an entry is unapplied
    await stream.read(["t"], "a", 10, 0.01)
    await stream.ack("t", [entry])
    assert _raw(redis_server).xlen("memshadow:ingest:t") == 0  # applied entries are trimmed
    assert await stream.release("t", "a", idle_only=True)
    assert await stream.waiting() == []
    await stream.append("t", b"y")
    assert await stream.waiting() == ["t"]
    assert await stream.hold(["t"], "b", 5.0) == {"t"}


async def test_a_shutdown_release_leaves_the_tenant_to_the_sweep(stream: RedisIngestStream) -> None:
    await stream.append("t", b"x")
    await stream.hold(["t"], "a", 5.0)
    assert await stream.release("t", "a", idle_only=False)
    assert await stream.waiting() == ["t"]
    assert await stream.hold(["t"], "b", 5.0) == {"t"}


async def test_a_redis_that_lost_its_data_is_read_again(
    stream: RedisIngestStream, redis_server: RedisServer
) -> None:
    await stream.append("t", b"lost")
    await stream.hold(["t"], "a", 5.0)
    redis_server.stop()
    with pytest.raises(StreamUnavailable):
        await stream.append("t", b"x")
    redis_server.start()  # no persistence: stream, group and lease are gone
    assert await _eventually_read(stream) == []  # NOGROUP: the group is made again
    assert await stream.positions(["t"]) == {"t": Position(None, None, exists=True)}
    entry = await stream.append("t", b"new")
    assert [e.id for e in await stream.read(["t"], "a", 10, 0.01)] == [entry]


async def _eventually_read(stream: RedisIngestStream) -> list[object]:
    # The shared state fails fast for retry_s after the outage.
    for _ in range(100):
        try:
            return list(await stream.read(["t"], "a", 10, 0.01))
        except StreamUnavailable:
            await asyncio.sleep(0.02)
    raise AssertionError("the stream did not come back")
