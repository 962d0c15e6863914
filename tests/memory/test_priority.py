"""Ingestion's embedding runs at background priority; a recall's query embedding does not.

Linux only, like per-thread priorities (``memory.priority``); so are the CI machines."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from memory.embedder import OnnxEmbedder, Vectors, resolve_model
from memory.priority import BACKGROUND_NICE, background_executor
from memory.service import MemoryService
from tests.fakes import FakeEmbedder
from tests.memory.helpers import scope


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class NiceRecordingEmbedder(FakeEmbedder):
    """Notes the calling thread's nice value for every batch, by size."""

    def __init__(self) -> None:
        super().__init__(64)
        self.nice: list[tuple[int, int]] = []

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.nice.append((len(texts), _nice()))
        return super().embed_batch(texts)


def test_background_threads_are_nicer_than_their_creator() -> None:
    with background_executor("test-bg") as pool:
        assert pool.submit(_nice).result() == min(19, _nice() + BACKGROUND_NICE)


async def test_stores_embed_in_the_background_and_recalls_do_not(
    make_service: Callable[..., MemoryService],
) -> None:
    embedder = NiceRecordingEmbedder()
    service = make_service(embedder=embedder)
    await service.start()
    try:
        await service.store(scope(), [{"content": "alice keeps bees on the roof"}])
        await service._ingest.flush()
        stored = list(embedder.nice)
        embedder.nice.clear()
        result = await service.search(scope(), "who keeps bees?")
    finally:
        await service.aclose()
    base = _nice()
    assert stored and all(nice == min(19, base + BACKGROUND_NICE) for _, nice in stored)
    assert embedder.nice == [(1, base)]
    assert result.items


def test_the_batch_sessions_threads_are_background_threads(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """ONNX Runtime's intra-op threads inherit the priority of the thread that made them."""

    def niced_threads() -> set[str]:
        target = str(min(19, _nice() + BACKGROUND_NICE))
        tasks = Path("/proc/self/task").iterdir()
        stats = {t.name: (t / "stat").read_text().rsplit(")", 1)[1].split() for t in tasks}
        return {t for t, fields in stats.items() if fields[16] == target}

    before = niced_threads()
    embedder = OnnxEmbedder(resolve_model(None), tmp_path_factory.mktemp("models"), threads=2)
    assert niced_threads() - before  # the all-cores session's pool thread
    assert embedder.embed_batch(["a query", "and a batch"] * 4).shape == (8, 384)
