"""The memory engine's :class:`memory.stream.IngestStream`, on Redis Streams.

Keys (under the shared state's ``memshadow:`` namespace), per tenant:

- ``ingest:<tenant>``: the stream; one entry per acknowledged submit (field ``d``), read
  through the consumer group ``writers``, each replica a consumer named after itself;
- ``ingest-lease:<tenant>``: the writer lease, the holder's name, ``SET NX PX``;
- ``ingest-applied:<tenant>``: the newest entry committed to the table (only ever rises);

and ``ingest-tenants``, the set of tenants whose streams may hold entries (so that every
replica's sweep finds those whose writer died). Each step is one command, most of them
Lua scripts so that they are atomic: appending (``XADD`` + ``SADD``), taking or renewing a
lease (and creating the group with it), acking (``XACK``, trimming what is applied,
publishing the position), and releasing a lease only while the stream is empty, so that a
release either sees a new entry or the tenant is back in the set.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged
entry survives a Redis crash; with ``everysec`` up to the last second of entries may be
lost; without AOF, a Redis restart loses every unapplied entry. Nothing here expires, so
``maxmemory-policy volatile-lru`` never evicts a stream. Failures are the shared state's
(:class:`proxy.shared_state.RedisState`: its breaker and outage log), raised to the memory
engine as :class:`memory.stream.StreamUnavailable`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from memory.stream import Position, StreamEntry, StreamId, StreamUnavailable, format_id, parse_id
from proxy.errors import SharedStateUnavailable
from proxy.shared_state import RedisState

__all__ = ["RedisIngestStream"]

T = TypeVar("T")
GROUP = "writers"
_FIELD = b"d"

_APPEND = """
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return id
"""

_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[3], '0', 'MKSTREAM')
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local idle = redis.call('XLEN', KEYS[2]) == 0
if ARGV[3] == '1' and not idle then return 0 end
redis.call('DEL', KEYS[1])
if idle then redis.call('SREM', KEYS[3], ARGV[2]) end
return 1
"""

_ACK = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 4))
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local current = redis.call('GET', KEYS[2])
local ms, seq = parts(ARGV[2])
if current then
  local cms, cseq = parts(current)
  if cms > ms or (cms == ms and cseq >= seq) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

_POSITIONS = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2]),
        last[1] and last[1][1] or false}
"""


class RedisIngestStream:
    """Per-tenant Redis Streams with a consumer group and a writer lease each."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._tenants_key = state.namespaced("ingest-tenants")
        self._prefix = state.namespaced("ingest:")
        self._append = state.script(_APPEND)
        self._hold = state.script(_HOLD)
        self._release = state.script(_RELEASE)
        self._ack = state.script(_ACK)
        self._positions = state.script(_POSITIONS)

    def _stream(self, tenant: str) -> str:
        return self._prefix + tenant

    def _lease(self, tenant: str) -> str:
        return self._state.namespaced("ingest-lease:" + tenant)

    def _applied(self, tenant: str) -> str:
        return self._state.namespaced("ingest-applied:" + tenant)

    async def _run(self, op: str, command: Callable[[Redis], Awaitable[T]]) -> T:
        try:
            return await self._state.execute(op, command)
        except SharedStateUnavailable as error:
            raise StreamUnavailable(str(error)) from error

    # -- the producer's side -------------------------------------------------------------
    async def append(self, tenant: str, payload: bytes) -> StreamId:
        keys = [self._stream(tenant), self._tenants_key]
        entry_id = await self._run(
            "ingest_append",
            lambda client: self._append(keys=keys, args=[payload, tenant], client=client),
        )
        return parse_id(entry_id)

    async def positions(self, tenants: Sequence[str]) -> dict[str, Position]:
        async def run(client: Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    await self._positions(
                        keys=[self._stream(tenant), self._applied(tenant)], client=pipe
                    )
                results: list[Any] = await pipe.execute()
                return results

        replies = await self._run("ingest_positions", run)
        return {
            tenant: Position(
                applied=parse_id(applied) if applied else None,
                head=parse_id(head) if head else None,
                exists=bool(exists),
            )
            for tenant, (exists, applied, head) in zip(tenants, replies, strict=True)
        }

    # -- the writer's side ---------------------------------------------------------------
    async def hold(self, tenants: Sequence[str], owner: str, ttl_s: float) -> set[str]:
        if not tenants:
            return set()
        ttl_ms = str(math.ceil(ttl_s * 1000))

        async def run(client: Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    await self._hold(
                        keys=[self._lease(tenant), self._stream(tenant)],
                        args=[owner, ttl_ms, GROUP], client=pipe,
                    )  # fmt: skip
                results: list[Any] = await pipe.execute()
                return results

        won = await self._run("ingest_hold", run)
        return {tenant for tenant, held in zip(tenants, won, strict=True) if held}

    async def release(self, tenant: str, owner: str, *, idle_only: bool) -> bool:
        keys = [self._lease(tenant), self._stream(tenant), self._tenants_key]
        args = [owner, tenant, "1" if idle_only else "0"]
        released = await self._run(
            "ingest_release", lambda client: self._release(keys=keys, args=args, client=client)
        )
        return bool(released)

    async def waiting(self) -> list[str]:
        members = await self._run("ingest_waiting", lambda c: c.smembers(self._tenants_key))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def read(
        self, tenants: Sequence[str], owner: str, count: int, block_s: float
    ) -> list[StreamEntry]:
        streams: dict[Any, Any] = {self._stream(tenant): ">" for tenant in tenants}
        block_ms = max(1, round(block_s * 1000)) if block_s > 0 else None

        async def run(client: Redis) -> Any:
            try:
                return await client.xreadgroup(GROUP, owner, streams, count=count, block=block_ms)
            except ResponseError as error:
                if not str(error).startswith("NOGROUP"):
                    raise
                # Redis lost the group (a restart without persistence): entries appended
                # since then are read from the start.
                for key in streams:
                    await _create_group(client, key)
                return []

        replies = await self._run("ingest_read", run)
        return [
            StreamEntry(_text(key).removeprefix(self._prefix), parse_id(entry_id), fields[_FIELD])
            for key, entries in replies or []
            for entry_id, fields in entries
            if fields and _FIELD in fields
        ]

    async def claim(self, tenant: str, owner: str, count: int) -> list[StreamEntry]:
        key = self._stream(tenant)

        async def run(client: Redis) -> Any:
            try:
                return await client.xautoclaim(key, GROUP, owner, 0, "0-0", count=count)
            except ResponseError as error:
                if not str(error).startswith("NOGROUP"):
                    raise
                await _create_group(client, key)
                return [b"0-0", [], []]

        reply = await self._run("ingest_claim", run)
        # Entries trimmed away (applied) are dropped from the pending list by Redis itself.
        return [
            StreamEntry(tenant, parse_id(entry_id), fields[_FIELD])
            for entry_id, fields in reply[1]
            if fields and _FIELD in fields
        ]

    async def ack(self, tenant: str, ids: Sequence[StreamId]) -> None:
        last = max(ids)
        below = format_id((last[0], last[1] + 1))  # MINID trims the ids lower than this
        keys = [self._stream(tenant), self._applied(tenant)]
        args = [GROUP, format_id(last), below, *(format_id(i) for i in ids)]
        await self._run("ingest_ack", lambda c: self._ack(keys=keys, args=args, client=c))


async def _create_group(client: Redis, key: str) -> None:
    try:
        await client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
