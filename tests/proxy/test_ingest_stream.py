"""The shared ingestion stream across replicas: one writer per tenant, takeover, no loss.

Each replica is a whole app (``create_app``) on one shared store with its own data dir,
run in-process through its HTTP surface, with a real redis-server. Writer leases live
1 s here, so a takeover happens within about a second and a half. A replica is cut off
from Redis by a TCP relay in front of it (a partition: it lives on, its lease expires).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as BlockingRedis

from memory.embedder import Vectors
from memory.ingest import WriteAheadLog
from proxy.keys import TenantRegistry
from tests.conftest import ADMIN_KEY, RedisServer, build_app, in_process
from tests.fakes import FakeEmbedder
from tests.proxy.test_memories_api import eventually
from tests.proxy.test_scale_out import replica_settings

pytestmark = pytest.mark.usefixtures("upstream")
TENANT = "acme"
LEASE = f"memshadow:ingest-lease:{TENANT}"
STREAM = f"memshadow:ingest:{TENANT}"


class GatedEmbedder(FakeEmbedder):
    """Blocks every batch until ``gate`` opens; ``entered`` says a batch is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.entered.set()
        self.gate.wait(30)
        return super().embed_batch(texts)


class SlowEmbedder(FakeEmbedder):
    """A writer that takes its time: acknowledged entries stay unapplied for a while."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self._delay_s = delay_s

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        time.sleep(self._delay_s)
        return super().embed_batch(texts)


class RedisLink:
    """A loopback TCP relay to redis-server; :meth:`cut` partitions whoever uses it."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()


@asynccontextmanager
async def fleet(
    tmp_path: Path, urls: dict[str, str], embedders: dict[str, FakeEmbedder] | None = None,
    lease_ttl_s: float = 1.0, wait_s: float = 10.0,
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:  # fmt: skip
    """Replicas named by ``urls`` (their Redis), each with its own data dir."""
    registry = TenantRegistry(str(tmp_path / "store" / "registry"))
    key, _ = registry.create_key(TENANT)
    async with AsyncExitStack() as stack:
        clients = {}
        for name, url in urls.items():
            settings = replica_settings(tmp_path, name, url).model_copy(
                # A stopped redis-server refuses at once; a loaded test machine may answer a
                # live one slower than the default 0.5 s, which would read as an outage.
                update={
                    "ingest_lease_ttl_s": lease_ttl_s,
                    "ingest_wait_s": wait_s,
                    "redis_timeout_s": 5.0,
                }
            )
            embedder = (embedders or {}).get(name) or FakeEmbedder()
            app = build_app(settings, embedder=embedder)
            clients[name] = await stack.enter_async_context(in_process(app, key))
        for client in clients.values():
            await eventually(lambda c=client: _metric(c, "memshadow_shared_state_up", 1.0), 5)
        yield clients


async def _metric(client: httpx.AsyncClient, name: str, value: float) -> bool:
    return f"{name} {value}" in (await client.get("/metrics")).text


async def _store(client: httpx.AsyncClient, content: str, user: str = "ann") -> str:
    response = await client.post("/v1/memories", json={"user": user, "content": content})
    assert response.status_code == 201, response.text
    memory_id: str = response.json()["data"][0]["id"]
    return memory_id


async def _found(client: httpx.AsyncClient, query: str, memory_id: str) -> bool:
    response = await client.post("/v1/memories/search", json={"query": query, "user": "ann"})
    assert response.status_code == 200, response.text
    return any(item["id"] == memory_id for item in response.json()["data"])


async def _listed(client: httpx.AsyncClient, user: str = "ann") -> list[dict[str, Any]]:
    response = await client.get("/v1/memories", params={"user": user, "limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]
    return items


async def _exported_ids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/v1/memories/export")
    assert response.status_code == 200, response.text
    return [json.loads(line)["id"] for line in response.text.splitlines()]


async def _backlog(client: httpx.AsyncClient) -> int:
    overview = await client.get("/admin/overview", headers=ADMIN)
    assert overview.status_code == 200, overview.text
    backlog: int = overview.json()["ingestion"]["write_backlog"]
    return backlog


ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _writers(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.writer for r in caplog.records
        if r.name == "memory.stream_writer" and getattr(r, "tenant", None) == TENANT
    ]  # fmt: skip


def _holder(server: RedisServer) -> bytes | None:
    holder = BlockingRedis(port=server.port).get(LEASE)
    return holder if isinstance(holder, bytes) else None


async def test_one_replica_writes_a_tenant_whoever_acknowledged(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="memory.stream_writer")
    urls = dict.fromkeys("abc", redis_server.url)
    async with fleet(tmp_path, urls) as replicas:
        stored = await asyncio.gather(*(
            _store(replicas["abc"[i % 3]], f"Ann's note number {i} about tea and bikes.")
            for i in range(30)
        ))  # fmt: skip
        for client in replicas.values():
            listed = {m["id"] for m in await _listed(client)}
            assert listed == set(stored)  # read-your-writes: each sees what it acknowledged
        writers = set(_writers(caplog))
        assert len(writers) == 1, writers  # one writer for the tenant, not one per replica
        assert _holder(redis_server) == next(iter(writers)).encode()
        gauge = "memshadow_ingest_writer_tenants"
        writing = [await _metric(client, gauge, 1.0) for client in replicas.values()]
        assert sorted(writing) == [False, False, True]
        assert BlockingRedis(port=redis_server.port).xlen(STREAM) == 0  # applied, trimmed
    for name in "abc":  # no replica's own write-ahead log was used
        assert WriteAheadLog(tmp_path / name / "memory" / "wal").applied() == 0


async def test_a_writer_cut_off_after_the_ack_is_taken_over_and_cannot_write(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A acknowledges, takes the lease and is embedding when it loses Redis: B or C claims
    the entry A had read, applies it, and A, released, does not write it a second time."""
    caplog.set_level(logging.DEBUG, logger="memory.stream_writer")
    link = RedisLink(redis_server.port)
    await link.start()
    gated = GatedEmbedder()
    urls = {"a": link.url, "b": redis_server.url, "c": redis_server.url}
    async with fleet(tmp_path, urls, {"a": gated}) as replicas:
        tea = await _store(replicas["a"], "Ann drinks green tea every morning.")
        assert await asyncio.to_thread(gated.entered.wait, 10)  # A's writer has read it
        a_writer = _holder(redis_server)
        await link.cut()
        for name in "bc":
            await eventually(lambda n=name: _found(replicas[n], "green tea", tea), seconds=10)
        assert _holder(redis_server) not in (None, a_writer)
        gated.gate.set()  # A's batch is embedded now, but A's lease has lapsed
        await eventually(lambda: _lapsed(caplog), seconds=10)
        assert a_writer is not None and a_writer.decode() not in _writers(caplog)
        assert (await _exported_ids(replicas["b"])).count(tea) == 1


async def _lapsed(caplog: pytest.LogCaptureFixture) -> bool:
    return any("lapsed while embedding" in r.getMessage() for r in caplog.records)


async def test_a_store_is_readable_at_once_where_it_was_acknowledged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """B is the tenant's (slow) writer: A still lists and gets what it just acknowledged."""
    urls = dict.fromkeys("ab", redis_server.url)
    async with fleet(tmp_path, urls, {"b": SlowEmbedder(0.4)}) as replicas:
        await _store(replicas["b"], "Ann's bike is red.")  # B takes the lease
        await eventually(lambda: _metric(replicas["b"], "memshadow_ingest_writer_tenants", 1.0))
        tea = await _store(replicas["a"], "Ann drinks green tea every morning.")
        got = await replicas["a"].get(f"/v1/memories/{tea}")
        assert got.status_code == 200 and got.json()["content"].startswith("Ann drinks")
        assert tea in {m["id"] for m in await _listed(replicas["a"])}
        assert await _metric(replicas["a"], "memshadow_ingest_writer_tenants", 0.0)
        assert (await replicas["b"].get(f"/v1/memories/{tea}")).status_code == 200


async def test_a_read_that_cannot_see_an_acknowledged_store_in_time_answers_503(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    gated = GatedEmbedder()  # the only replica, so the writer, and stuck
    async with fleet(tmp_path, {"a": redis_server.url}, {"a": gated}, wait_s=0.3) as replicas:
        a = replicas["a"]
        tea = await _store(a, "Ann drinks green tea every morning.")
        listed = await a.get("/v1/memories", params={"user": "ann"})
        assert listed.status_code == 503, listed.text
        assert listed.json()["error"]["code"] == "memory_writes_pending"
        assert listed.headers["retry-after"] == "1"
        assert (await a.get(f"/v1/memories/{tea}")).status_code == 200  # pending, known here
        assert await _backlog(a) == 1  # the operator sees what waits in the stream
        gated.gate.set()
        assert [m["id"] for m in await _listed(a)] == [tea]
        assert await _backlog(a) == 0


async def test_a_replica_that_stops_gives_its_leases_up_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """With a 60 s lease, B could only take the tenant over within the test because A,
    shutting down, released it."""
    registry = TenantRegistry(str(tmp_path / "store" / "registry"))
    key, _ = registry.create_key(TENANT)
    apps = {
        name: build_app(replica_settings(tmp_path, name, redis_server.url).model_copy(
            update={"ingest_lease_ttl_s": 60.0, "ingest_wait_s": 5.0}))
        for name in "ab"
    }  # fmt: skip
    async with in_process(apps["b"], key) as b:
        async with in_process(apps["a"], key) as a:
            await _store(a, "Ann's bike is red.")
            await eventually(lambda: _metric(a, "memshadow_ingest_writer_tenants", 1.0))
        assert _holder(redis_server) is None
        tea = await _store(b, "Ann drinks green tea every morning.")
        assert tea in {m["id"] for m in await _listed(b)}
        assert await _metric(b, "memshadow_ingest_writer_tenants", 1.0)


async def test_an_exact_duplicate_acknowledged_by_two_replicas_is_reinforced(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    urls = dict.fromkeys("ab", redis_server.url)
    async with fleet(tmp_path, urls, {"b": SlowEmbedder(0.4)}) as replicas:
        await _store(replicas["b"], "Ann's bike is red.")
        await eventually(lambda: _metric(replicas["b"], "memshadow_ingest_writer_tenants", 1.0))
        text = "Ann drinks green tea every morning."
        first = await _store(replicas["a"], text)
        second = await _store(replicas["b"], text)
        assert first != second  # neither replica could see the other's pending store
        live = [m for m in await _listed(replicas["a"]) if m["content"] == text]
        assert [(m["id"], m["reinforced"]) for m in live] == [(first, 1)]
        duplicate = (await replicas["b"].get(f"/v1/memories/{second}")).json()
        assert duplicate["superseded_by"] == first


async def test_a_forget_waits_for_what_other_replicas_acknowledged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Stored through A, not applied yet by the slow writer B, forgotten through C: the
    memory must not come back once B applies it."""
    urls = dict.fromkeys("abc", redis_server.url)
    async with fleet(tmp_path, urls, {"b": SlowEmbedder(0.4)}) as replicas:
        await _store(replicas["b"], "Ann's bike is red.")
        await eventually(lambda: _metric(replicas["b"], "memshadow_ingest_writer_tenants", 1.0))
        tea = await _store(replicas["a"], "Ann drinks green tea every morning.")
        forgot = await replicas["c"].delete("/v1/memories", params={"user": "ann"})
        assert forgot.status_code == 200 and forgot.json()["deleted"] == 2
        await asyncio.sleep(0.6)  # longer than B's batch
        for client in replicas.values():
            assert await _listed(client) == []
            assert (await client.get(f"/v1/memories/{tea}")).status_code == 404


async def test_redis_down_stores_fall_back_to_the_local_log_then_return_to_the_stream(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memory.stream_ingest")
    urls = dict.fromkeys("ab", redis_server.url)
    async with fleet(tmp_path, urls) as replicas:
        a, b = replicas["a"], replicas["b"]
        before = await _store(a, "Ann's bike is red.")
        await eventually(lambda: _found(b, "bike", before))
        redis_server.stop()
        down = [await _store(a, f"Ann visited museum number {i}.") for i in range(3)]
        for memory_id in down:  # acknowledged in A's write-ahead log, applied by A
            await eventually(lambda m=memory_id: _found(a, "museum", m))
        assert await _metric(a, "memshadow_ingest_fallback_total", 3.0)
        wal = WriteAheadLog(tmp_path / "a" / "memory" / "wal")
        await eventually(lambda: asyncio.to_thread(lambda: wal.applied() == 3))  # marked after
        outages = [r for r in caplog.records if "ingestion stream unavailable" in r.getMessage()]
        assert len(outages) == 1

        redis_server.start()
        for client in replicas.values():
            await eventually(lambda c=client: _metric(c, "memshadow_shared_state_up", 1.0), 10)
        after = await _store(a, "Ann drinks green tea every morning.")
        await eventually(lambda: _found(b, "green tea", after))
        assert await _metric(a, "memshadow_ingest_fallback_total", 3.0)  # through the stream
        assert _holder(redis_server) is not None
        assert any("stream is back" in r.getMessage() for r in caplog.records)


async def test_an_entry_that_cannot_be_read_holds_up_only_its_tenant(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Written by a newer version, say: retried (never dropped) while others go on."""
    redis = BlockingRedis(port=redis_server.port)
    redis.xadd("memshadow:ingest:other", {"d": b'{"v": 1, "rows": [{}]}'})
    redis.sadd("memshadow:ingest-tenants", "other")
    async with fleet(tmp_path, {"a": redis_server.url}) as replicas:
        await eventually(lambda: _logged(caplog, "stream entries of tenant 'other' failed"))
        tea = await _store(replicas["a"], "Ann drinks green tea every morning.")
        assert [m["id"] for m in await _listed(replicas["a"])] == [tea]
        await eventually(lambda: _logged(caplog, "retrying in 0.4s"))  # still retried
    assert redis.xlen("memshadow:ingest:other") == 1


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)
