"""Background Responses API answers, captured by whichever replica sees them finished.

A request with ``background: true`` is answered at once with a queued response; its answer
comes later, to whoever polls ``GET /v1/responses/{id}`` (or streams it with
``?stream=true``), and behind a load balancer that may be any replica. So when the request's
own exchange is captured, what capturing its answer will need is filed in the shared state
under the response id, for a day: the scope, the conversation's turns (their text only, as
capture keeps them: no images or files), the conversation it belongs to, the block's format
and the capture flags. The first poll through any replica that finds the response finished
claims the record and captures the answer there, once.

What was injected is read back from the receipt and the store, never filed: the shared state
holds no memory contents (a memory forgotten meanwhile is not used to credit the answer or
to cut what it copied, see :mod:`policies.echo`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, cast, get_args

import orjson

from formatters import Family, Note, render_block
from memory.conversation import conversation_turns
from memory.model import Memory, Scope
from memory.service import MemoryService
from proxy.capture import CaptureJob
from proxy.errors import SharedStateUnavailable
from proxy.receipts import Receipt, ReceiptStore
from proxy.shared_state import SharedState
from proxy.wire import RESPONSES, responses_finished

__all__ = ["BackgroundResponses"]

logger = logging.getLogger("memshadow.capture")

_TTL_S = 86400.0
_JOB, _TAKEN = "job", "taken"


def _key(tenant: str, response_id: str) -> str:
    return "background:" + orjson.dumps([tenant, response_id]).decode()


class BackgroundResponses:
    """Files a background response's capture when it starts; hands it to the poll that
    finds it finished. Both calls run in the capture worker, never on a response path."""

    def __init__(
        self,
        shared: SharedState,
        receipts: ReceiptStore,
        memories: MemoryService,
        *,
        ttl_s: float = _TTL_S,
    ) -> None:
        self._shared = shared
        self._receipts = receipts
        self._memories = memories
        self._ttl_s = ttl_s

    async def started(self, job: CaptureJob, response_id: str, family: Family) -> CaptureJob:
        """File what the answer's capture will need; ``job`` (the request's own exchange,
        captured now) is returned unchanged."""
        payload = orjson.loads(job.raw_request)
        turns = conversation_turns(job.wire.conversation(payload))
        record = {
            "user": job.scope.user,
            "session": job.scope.session,
            "turns": [[turn.role, turn.text] for turn in turns],
            "conversation": payload.get("conversation"),
            "family": family,
            "capture": job.capture,
            "metadata": job.metadata,
        }
        fields = {_JOB: orjson.dumps(record).decode()}
        try:
            await self._shared.claim(_key(job.scope.tenant, response_id), fields, self._ttl_s)
        except SharedStateUnavailable:
            logger.debug("background response %s not filed: the shared state is down", response_id)
        return job

    async def finished(
        self, tenant: str, response_id: str, chunks: list[bytes], streamed: bool
    ) -> CaptureJob | None:
        """The capture of a polled response's answer: None unless this is a background
        response of ``tenant`` that is finished and no poll has taken yet (or the shared
        state is down)."""
        key = _key(tenant, response_id)
        try:
            filed = await self._shared.fields(key)
            if _JOB not in filed or _TAKEN in filed or not responses_finished(chunks, streamed):
                return None
            if not await self._shared.claim(key, {_TAKEN: "1"}, self._ttl_s):
                return None  # another poll, here or on another replica, took it first
        except SharedStateUnavailable:
            return None  # the shared state logged the outage; a later poll may capture it
        try:
            receipt = await self._receipts.get(tenant, response_id)
        except SharedStateUnavailable:
            receipt = None  # the answer is captured; what it used is not credited
        record: dict[str, Any] = orjson.loads(filed[_JOB])
        conversation = record.get("conversation")
        request = {
            "input": [{"role": role, "content": text} for role, text in record["turns"]],
            **({"conversation": conversation} if conversation else {}),
        }
        scope = Scope(tenant=tenant, user=record["user"], session=record["session"])
        recalled: list[Memory] = []
        if receipt is not None:
            receipt, recalled = await self._with_contents(receipt)
        return CaptureJob(
            scope, RESPONSES, orjson.dumps(request), chunks, streamed, record["metadata"],
            capture=bool(record["capture"]), receipt=receipt,
            recalled=_block(record.get("family"), recalled),
        )  # fmt: skip

    async def _with_contents(self, receipt: Receipt) -> tuple[Receipt, list[Memory]]:
        """The receipt with what it injected, as the store holds it now."""
        found = [
            memory
            for injected in receipt.memories
            if (memory := await self._memories.get(receipt.tenant, injected.id, user=receipt.user))
            is not None
        ]
        return replace(receipt, contents={m.id: m.content for m in found}), found


def _block(family: object, memories: list[Memory]) -> str:
    """The block those memories were injected in, rendered again (what an answer copied
    from it is cut before capture: its words are what matters, see policies.echo)."""
    if not memories:
        return ""
    notes = [Note(m.content, m.created_at) for m in sorted(memories, key=lambda m: m.created_at)]
    return render_block(cast(Family, family) if family in get_args(Family) else "openai", notes)
