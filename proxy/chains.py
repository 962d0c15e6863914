"""What recent Responses API exchanges said, for follow-ups that chain on them.

A request that continues a stored response (``previous_response_id``) or a conversation
(``conversation``) carries only its new input: the turns before it live on the provider. A
short follow-up that refers back ("and her?", "book it") needs them to form its recall query
(:func:`memory.conversation.recall_query`), so the capture worker notes the end of each
exchange's user turn and answer here, and the injector puts them before the new input when
it builds the query (never in the prompt).

Kept in the shared state for an hour, so a follow-up served by another replica finds what
the first one noted. Reading it is the one shared-state call on the chat path before the
request is forwarded: it runs inside the recall deadline, and when the shared state fails
the follow-up is recalled from its own words, as when nothing was noted. Keys hold the
tenant and user, so nobody else's exchange shapes a query.
"""

from __future__ import annotations

import orjson

from memory.conversation import context_tail
from proxy.errors import SharedStateUnavailable
from proxy.shared_state import SharedState

__all__ = ["ChainContext"]

_TTL_S = 3600.0


def _key(tenant: str, user: str, key: str) -> str:
    return "chain:" + orjson.dumps([tenant, user, key]).decode()


class ChainContext:
    def __init__(self, shared: SharedState, *, ttl_s: float = _TTL_S) -> None:
        self._shared = shared
        self._ttl_s = ttl_s

    async def note(
        self, tenant: str, user: str, keys: list[str], question: str, answer: str
    ) -> None:
        """The exchange that a response id (or conversation) ended with."""
        exchange = orjson.dumps([context_tail(question), context_tail(answer)])
        try:
            for key in keys:
                await self._shared.swap(_key(tenant, user, key), exchange, self._ttl_s)
        except SharedStateUnavailable:
            return  # the shared state logged the outage; a follow-up goes on its own words

    async def before(self, tenant: str, user: str, key: str) -> list[dict[str, str]]:
        """The turns that ``key`` continues, as chat messages; none when unknown."""
        try:
            noted = await self._shared.get(_key(tenant, user, key))
        except SharedStateUnavailable:
            return []
        if noted is None:
            return []
        question, answer = orjson.loads(noted)
        turns = (("user", question), ("assistant", answer))
        return [{"role": role, "content": text} for role, text in turns if text]
