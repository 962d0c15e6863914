"""Writer lanes: each tenant's work in order, one at a time; tenants side by side."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from memory.index import ScopeIndex
from memory.lancedb_store import LanceMemoryStore
from memory.lanes import Lanes
from memory.store import ScopeFilter
from tests.memory.test_shared_table_writes import EMB, _memory


def test_a_lanes_tasks_run_in_order_and_never_two_at_once() -> None:
    lanes = Lanes(4, "test-lane")
    order: list[int] = []
    running = 0
    overlapped = False
    guard = threading.Lock()

    def task(n: int) -> int:
        nonlocal running, overlapped
        with guard:
            running += 1
            overlapped |= running > 1
        time.sleep(0.001)
        order.append(n)
        with guard:
            running -= 1
        return n * n

    futures = [lanes.submit("t", lambda n=n: task(n)) for n in range(40)]
    assert [f.result(timeout=10) for f in futures] == [n * n for n in range(40)]
    assert order == list(range(40)) and not overlapped
    lanes.shutdown()


def test_a_held_lane_holds_up_no_other_and_shutdown_runs_what_is_queued() -> None:
    lanes = Lanes(2, "test-lane")
    release = threading.Event()
    held = lanes.submit("slow", lambda: release.wait(10))
    queued = lanes.submit("slow", lambda: "after")
    assert lanes.submit("fast", lambda: "done").result(timeout=5) == "done"
    assert not queued.done()
    failing = lanes.submit("fast", lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):  # an error reaches its submitter, the lane goes on
        failing.result(timeout=5)
    assert lanes.submit("fast", lambda: "still").result(timeout=5) == "still"
    release.set()
    lanes.shutdown()
    assert held.result() is True and queued.result() == "after"
    with pytest.raises(RuntimeError):
        lanes.submit("t", lambda: None)


class SlowLoads(LanceMemoryStore):
    """Scope loads of tenant ``slow`` wait until ``release`` is set."""

    def __init__(self, uri: Path) -> None:
        super().__init__(uri, model_id=EMB.model_id, dimension=EMB.dimension)
        self.release = threading.Event()
        self.loading = threading.Event()

    def _load_scope(self, tenant: str, user: str) -> ScopeIndex | None:
        if tenant == "slow":
            self.loading.set()
            self.release.wait(10)
        return super()._load_scope(tenant, user)


async def test_a_tenants_slow_scope_load_holds_up_no_other_tenant(tmp_path: Path) -> None:
    store = SlowLoads(tmp_path)
    await store.start()
    memories = [_memory(n) for n in range(3)]
    vectors = EMB.embed_batch([m.content for m in memories])
    await store.add("slow", memories, vectors, new=True)
    query, vector = "allotment note", EMB.embed_batch(["allotment note"])[0]
    slow = asyncio.create_task(store.candidates("slow", vector, query, ScopeFilter("ann"), 5))
    try:
        assert await asyncio.to_thread(store.loading.wait, 5)
        # Another tenant writes, loads its scope and credits while the slow load holds its
        # lane (one writer thread for every tenant kept all of this waiting behind it).
        others = [m.model_copy(update={"tenant": "fast"}) for m in memories]
        await asyncio.wait_for(store.add("fast", others, vectors, new=True), 5)
        found = await asyncio.wait_for(
            store.candidates("fast", vector, query, ScopeFilter("ann"), 5), 5
        )
        assert len(found.memories) == 3
        assert await asyncio.wait_for(store.touch("fast", ["m0"], useful=1.0), 5) == 1
        assert not slow.done()
    finally:
        store.release.set()
    assert len((await slow).memories) == 3
    await store.aclose()
