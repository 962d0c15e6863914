"""What recent Responses API exchanges said, for follow-ups that chain on them.

A request that continues a stored response (``previous_response_id``) or a conversation
(``conversation``) carries only its new input: the turns before it live on the provider. A
short follow-up that refers back ("and her?", "book it") needs them to form its recall query
(:func:`memory.conversation.recall_query`), so the capture worker notes the end of each
exchange's user turn and answer here, and the injector puts them before the new input when
it builds the query (never in the prompt). Kept by this process only, bounded and for an
hour: a follow-up served by another replica is recalled from its own words, as before.
Keys hold the tenant and user, so nobody else's exchange shapes a query.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from memory.conversation import context_tail

__all__ = ["ChainContext", "Exchange"]

_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Exchange:
    question: str
    answer: str
    noted_at: float


class ChainContext:
    def __init__(self, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._exchanges: OrderedDict[tuple[str, str, str], Exchange] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def note(self, tenant: str, user: str, keys: list[str], question: str, answer: str) -> None:
        """The exchange that a response id (or conversation) ended with."""
        exchange = Exchange(context_tail(question), context_tail(answer), self._clock())
        for key in keys:
            slot = (tenant, user, key)
            self._exchanges[slot] = exchange
            self._exchanges.move_to_end(slot)
        while len(self._exchanges) > self._capacity:
            self._exchanges.popitem(last=False)

    def before(self, tenant: str, user: str, key: str) -> list[dict[str, str]]:
        """The turns that ``key`` continues, as chat messages; none when unknown here."""
        exchange = self._exchanges.get((tenant, user, key))
        if exchange is None or self._clock() - exchange.noted_at > _TTL_S:
            return []
        turns = (("user", exchange.question), ("assistant", exchange.answer))
        return [{"role": role, "content": text} for role, text in turns if text]
