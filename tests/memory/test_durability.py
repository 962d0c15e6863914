"""An acknowledged store survives kill -9; the write-ahead log replays it at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from memory.ingest import WriteAheadLog
from tests.memory.helpers import scope, searchable

REPO = Path(__file__).resolve().parents[2]

# The child's embedder never returns, so the memory cannot have reached LanceDB when the
# child is killed: only the write-ahead log can bring it back.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from pathlib import Path
    from memory.model import Scope
    from memory.service import MemoryService
    from tests.fakes import FakeEmbedder

    class StuckEmbedder(FakeEmbedder):
        def embed_batch(self, texts):
            threading.Event().wait()

    async def main():
        service = MemoryService(Path(sys.argv[1]), StuckEmbedder(64))
        await service.start()
        stored = await service.store(
            Scope(tenant="acme", user="alice"), [{"content": "the spare key is under the blue pot"}]
        )
        print("ACK", stored[0].id, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_acknowledged_store_survives_sigkill(make_service, tmp_path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert line.startswith("ACK "), line
    memory_id = line.split()[1]
    service = make_service(data)
    await service.start()
    try:
        assert await searchable(service, scope(), "where is the spare key", memory_id)
        assert (
            await service.get("acme", memory_id)
        ).content == "the spare key is under the blue pot"
    finally:
        await service.aclose()
    # Applied entries are not replayed again, and nothing is duplicated.
    again = make_service(data)
    await again.start()
    try:
        items, _ = await again.list_memories("acme", user="alice")
        assert [m.id for m in items] == [memory_id]
    finally:
        await again.aclose()


async def test_torn_tail_is_ignored_and_later_entries_still_replay(make_service, tmp_path) -> None:
    data = tmp_path / "data"
    service = make_service(data)
    await service.start()
    [kept] = await service.store(scope(), [{"content": "first durable fact"}])
    await service.aclose()
    segment = sorted((data / "wal").glob("wal-*.log"))[-1]
    with segment.open("a") as handle:
        handle.write('deadbeef {"seq": 99, "tenant": "acme", "memo')  # a crash mid-write
    wal = WriteAheadLog(data / "wal")
    assert wal.open() == []  # nothing pending, the torn line is not an entry
    wal.close()
    service = make_service(data)
    await service.start()
    try:
        [later] = await service.store(scope(), [{"content": "second durable fact"}])
        items, _ = await service.list_memories("acme", user="alice")
        assert [m.id for m in items] == [kept.id, later.id]
    finally:
        await service.aclose()


async def test_close_drains_the_queue(make_service, tmp_path) -> None:
    data = tmp_path / "data"
    service = make_service(data)
    await service.start()
    stored = await service.store(scope(), [{"content": f"fact {i} q{i}"} for i in range(300)])
    await service.aclose()
    assert WriteAheadLog(data / "wal").applied() >= len(stored)
    reopened = make_service(data)
    await reopened.start()
    try:
        # export includes near-duplicates (superseded), which the fake embedder makes a few of
        exported = {r["id"] async for r in reopened.export("acme")}
        assert exported == {m.id for m in stored}
    finally:
        await reopened.aclose()
