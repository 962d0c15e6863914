"""Small helpers shared by the memory tests."""

from __future__ import annotations

import asyncio
import time

from memory.model import Scope
from memory.service import MemoryService


async def searchable(
    service: MemoryService, scope: Scope, query: str, memory_id: str, timeout: float = 5.0
) -> bool:
    """Poll search until ``memory_id`` shows up (ingestion is asynchronous by design)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await service.search(scope, query, k=20)
        if any(item.memory.id == memory_id for item in result.items):
            return True
        await asyncio.sleep(0.02)
    return False


async def unsearchable(
    service: MemoryService, scope: Scope, query: str, memory_id: str, timeout: float = 5.0
) -> bool:
    """Poll search until ``memory_id`` leaves it (supersession is applied just after the
    superseding memory is written, so for a moment both are live)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await service.search(scope, query, k=20)
        if all(item.memory.id != memory_id for item in result.items):
            return True
        await asyncio.sleep(0.02)
    return False


def scope(user: str = "alice", tenant: str = "acme", session: str | None = None) -> Scope:
    return Scope(tenant=tenant, user=user, session=session)
