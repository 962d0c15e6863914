"""State shared by replicas: receipts, calibration, capture ledger, session signals, and
the broadcast that keeps caches fresh. Redis when ``MEMSHADOW_REDIS_URL`` is set, else
in-process (see :mod:`proxy.shared_state.base`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from config import Settings
from proxy.metrics import Metrics
from proxy.shared_state.base import GapHandler, MessageHandler, SharedState
from proxy.shared_state.memory import InProcessState
from proxy.shared_state.redis import RedisState

__all__ = [
    "GapHandler",
    "InProcessState",
    "MessageHandler",
    "RedisState",
    "SharedState",
    "open_shared_state",
]


@asynccontextmanager
async def open_shared_state(settings: Settings, metrics: Metrics) -> AsyncIterator[SharedState]:
    """The shared state this deployment is configured for, open for the app's lifetime."""
    if settings.redis_url is None:
        metrics.shared_state_up.set(1)  # in this process: always there
        yield InProcessState()
        return
    state = RedisState(settings.redis_url, metrics, timeout_s=settings.redis_timeout_s)
    await state.start()
    try:
        yield state
    finally:
        await state.aclose()
