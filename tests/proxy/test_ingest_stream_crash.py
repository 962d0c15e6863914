"""A writer process killed with SIGKILL: after the ack before applying, and after the table
commit before the XACK. Another replica applies what it left, and nothing is duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lancedb
import pytest
from redis import Redis as BlockingRedis

from memory.lance_rows import table_name
from tests.conftest import RedisServer
from tests.proxy.test_ingest_stream import (
    STREAM,
    TENANT,
    _exported_ids,
    _found,
    fleet,
)
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")
REPO = Path(__file__).resolve().parents[2]

# mode "embed": the writer's embedder never returns (killed before applying);
# mode "ack": the writer commits the batch, then is killed as it would XACK it.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from pathlib import Path
    from memory.model import Scope
    from memory.service import MemoryService
    from memory.stream_ingest import StreamConfig
    from proxy.ingest_stream import RedisIngestStream
    from proxy.memory_feed import SharedPeerFeed
    from proxy.metrics import Metrics
    from proxy.shared_state import RedisState
    from tests.fakes import FakeEmbedder

    mode, data, store, url = sys.argv[1:5]

    class StuckEmbedder(FakeEmbedder):
        def embed_batch(self, texts):
            print("EMBEDDING", flush=True)
            threading.Event().wait()

    class DiesAtAck(RedisIngestStream):
        async def ack(self, tenant, ids):
            print("COMMITTED", flush=True)
            await asyncio.Event().wait()

    async def main():
        state = RedisState(url, Metrics())
        await state.start()
        stream = DiesAtAck(state) if mode == "ack" else RedisIngestStream(state)
        embedder = StuckEmbedder() if mode == "embed" else FakeEmbedder()
        service = MemoryService(
            Path(data), embedder, store_uri=store, peers=SharedPeerFeed(state),
            stream=StreamConfig(stream, lease_ttl_s=1.0),
        )
        await service.start()
        stored = await service.store(
            Scope(tenant="acme", user="ann"), [{"content": "the spare key is under the blue pot"}]
        )
        print("ACK", stored[0].id, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def _kill_writer(mode: str, root: Path, redis_url: str, wait_for: str) -> str:
    """Run the child until it acknowledged a store and printed ``wait_for``; SIGKILL it."""
    store = root / "store" / "memory" / "lancedb"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(root / "child"), str(store), redis_url],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert child.stdout is not None
    memory_id, seen = "", False
    try:
        while not (memory_id and seen):
            line = child.stdout.readline()
            assert line, "the child exited early"
            if line.startswith("ACK "):
                memory_id = line.split()[1]
            seen = seen or line.strip() == wait_for
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    return memory_id


def _rows(root: Path) -> int:
    table = lancedb.connect(root / "store" / "memory" / "lancedb").open_table(table_name(TENANT))
    return int(table.count_rows())


async def test_a_writer_killed_after_the_ack_is_replaced_within_seconds(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    urls = dict.fromkeys("bc", redis_server.url)
    async with fleet(tmp_path, urls) as replicas:
        memory_id = _kill_writer("embed", tmp_path, redis_server.url, "EMBEDDING")
        for client in replicas.values():
            await eventually(lambda c=client: _found(c, "spare key", memory_id), seconds=10)
        assert await _exported_ids(replicas["b"]) == [memory_id]


async def test_an_entry_committed_but_not_acked_is_applied_again_without_a_copy(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    memory_id = _kill_writer("ack", tmp_path, redis_server.url, "COMMITTED")
    redis = BlockingRedis(port=redis_server.port)
    assert _rows(tmp_path) == 1  # in the table already
    assert redis.xlen(STREAM) == 1 and redis.xpending(STREAM, "writers")["pending"] == 1
    async with fleet(tmp_path, dict.fromkeys("bc", redis_server.url)) as replicas:
        await eventually(lambda: _drained(redis), seconds=10)  # claimed, applied, acked
        assert await _exported_ids(replicas["c"]) == [memory_id]
        assert await _found(replicas["c"], "spare key", memory_id)
    assert _rows(tmp_path) == 1


async def _drained(redis: BlockingRedis) -> bool:
    return bool(redis.xlen(STREAM) == 0 and redis.xpending(STREAM, "writers")["pending"] == 0)
