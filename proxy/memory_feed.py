"""The memory engine's :class:`memory.peers.PeerFeed`, over the shared state's broadcast."""

from __future__ import annotations

import logging
from collections.abc import Callable

from memory.peers import TableChange
from proxy.errors import SharedStateUnavailable
from proxy.shared_state import SharedState

__all__ = ["SharedPeerFeed"]

logger = logging.getLogger("memshadow.memory_feed")
CHANNEL = "memory"


class SharedPeerFeed:
    """Announces this replica's table changes to the others, and theirs to the store."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    async def publish(self, change: TableChange) -> None:
        try:
            await self._shared.publish(CHANNEL, change.to_bytes())
        except SharedStateUnavailable:
            # Logged once by the shared state; the others' version check finds the change.
            logger.debug("change of tenant %s not announced", change.tenant)

    def subscribe(
        self, on_change: Callable[[TableChange], None], on_gap: Callable[[], None]
    ) -> None:
        self._shared.subscribe(
            CHANNEL, lambda message: on_change(TableChange.from_bytes(message)), on_gap
        )
