"""Fixtures for the memory engine: a real LanceDB service on a temp dir, the fake embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from memory.service import MemoryService
from memory.tokens import TokenCounter
from tests.fakes import FakeEmbedder


@pytest.fixture(scope="session")
def tokens() -> TokenCounter:
    return TokenCounter()


@pytest.fixture
def make_service(tmp_path: Path, tokens: TokenCounter) -> Callable[..., MemoryService]:
    def make(
        data_dir: Path | None = None, embedder: object | None = None, **kw: object
    ) -> MemoryService:
        return MemoryService(
            data_dir or tmp_path / "data",
            embedder or FakeEmbedder(64),
            tokens=tokens,
            **kw,  # type: ignore[arg-type]
        )

    return make


@pytest.fixture
async def service(make_service: Callable[..., MemoryService]) -> AsyncIterator[MemoryService]:
    svc = make_service()
    await svc.start()
    yield svc
    await svc.aclose()
