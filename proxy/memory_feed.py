"""The memory engine's feeds to the other replicas, over the shared state's broadcast: table
changes (:class:`memory.peers.PeerFeed`) and what feedback taught
(:class:`memory.outcomes.OutcomeFeed`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from memory.outcomes import OutcomeNews, news_from_bytes, news_to_bytes
from memory.peers import TableChange
from proxy.errors import SharedStateUnavailable
from proxy.shared_state import SharedState

__all__ = ["SharedOutcomeFeed", "SharedPeerFeed"]

logger = logging.getLogger("memshadow.memory_feed")
CHANNEL = "memory"
OUTCOMES_CHANNEL = "outcomes"


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


class SharedOutcomeFeed:
    """Tells the other replicas what feedback taught this one, and this one what theirs did."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    async def publish(self, news: OutcomeNews) -> None:
        try:
            await self._shared.publish(OUTCOMES_CHANNEL, news_to_bytes(news))
        except SharedStateUnavailable:
            # Logged once by the shared state; the others learn at the question's next feedback.
            logger.debug("outcome of tenant %s not announced", news.tenant)

    def subscribe(self, on_news: Callable[[OutcomeNews], None]) -> None:
        # A cut-off feed leaves nothing to repair: a missed outcome is learned again.
        self._shared.subscribe(
            OUTCOMES_CHANNEL, lambda message: on_news(news_from_bytes(message)), lambda: None
        )
