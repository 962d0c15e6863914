"""Capture: after a completion finishes, its new turns become episodic memories.

The response path only collects bytes and enqueues; parsing the answer, working out which
turns are new and storing them happens in a worker the lifespan owns (and drains at
shutdown), so capture never delays a response. A failed or aborted upstream call captures
nothing. Clients resend the whole history every turn, so a per-scope ledger of turn
fingerprints, in the shared state, keeps each turn from being stored twice by any replica
(claimed before it is stored, given back if storing fails); the engine's exact-duplicate
check is the second line behind it (and the only one while the shared state is down).

The same worker watches consecutive turns of a session for regenerates and corrections:
the last turn of each session (with its completion's receipt) is swapped in the shared
state after every response, so the next turn may come through any replica. For an API
whose requests chain on stored exchanges (the Responses API), it also notes what each
exchange said, for the recall query of a follow-up (``proxy.chains``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from memory.conversation import Turn, conversation_turns, last_user_text
from memory.model import Scope, Source, Tier
from memory.service import MemoryService
from policies.chatter import is_chatter
from policies.echo import without_recalled
from policies.signals import (
    CORRECTION_WEIGHT,
    REGENERATE_WEIGHT,
    USAGE_WEIGHT,
    is_correction,
    is_regenerate,
    used_memories,
)
from proxy.chains import ChainContext
from proxy.errors import SharedStateUnavailable
from proxy.feedback import CalibrationBook
from proxy.metrics import Metrics
from proxy.receipts import Receipt, ReceiptStore, credit_once
from proxy.shared_state import SharedState
from proxy.streaming import StreamObserver
from proxy.wire import Wire, continued_as

logger = logging.getLogger("memshadow.capture")
events = logging.getLogger("memshadow.events")
_COMPLETION_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')
_LEDGER_TTL_S = 30 * 86400.0  # a conversation resent after a month of silence is new again
_LAST_TURN_TTL_S = 86400.0


@dataclass(frozen=True, slots=True)
class CaptureJob:
    """A completed exchange: store its new turns (``capture``), credit memories it used."""

    scope: Scope
    wire: Wire
    raw_request: bytes
    chunks: list[bytes]
    streamed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    capture: bool = True
    receipt: Receipt | None = None
    recalled: str = ""  # the memory block the request carried


@dataclass(frozen=True, slots=True)
class TurnJob:
    """A turn was answered: compare it with the session's previous one (signals)."""

    scope: Scope
    wire: Wire
    raw_request: bytes
    receipt: Receipt

    def last_user_turn(self) -> str:
        """The last user turn's text (parsed in the worker, off the response path)."""
        return last_user_text(self.wire.conversation(orjson.loads(self.raw_request)))


@dataclass(frozen=True, slots=True)
class DeferredJob:
    """A capture that needs the shared state first: ``resolve`` gives the exchange to
    capture, or None when there is none (a background response: see proxy.background)."""

    resolve: Callable[[], Awaitable[CaptureJob | None]]


def fingerprint(turn: Turn) -> str:
    return hashlib.blake2b(f"{turn.role}\0{turn.text}".encode(), digest_size=12).hexdigest()


def _scope_key(kind: str, scope: Scope) -> str:
    return f"{kind}:" + orjson.dumps([scope.tenant, scope.user, scope.session]).decode()


class CaptureLedger:
    """Which turns of which scope were captured already, by any replica."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    async def claim(self, scope: Scope, turns: list[Turn]) -> list[Turn]:
        """The turns never captured in this scope (each once), now marked as captured."""
        fresh: dict[str, Turn] = {}
        for turn in turns:
            fresh.setdefault(fingerprint(turn), turn)
        marks = dict.fromkeys(fresh, "1")
        won = await self._shared.claim(_scope_key("ledger", scope), marks, _LEDGER_TTL_S)
        return [fresh[mark] for mark in won]

    async def release(self, scope: Scope, turns: list[Turn]) -> None:
        """Turns claimed but not stored: the next resend may capture them."""
        await self._shared.release(_scope_key("ledger", scope), [fingerprint(t) for t in turns])


class SessionSignals:
    """The last turn of each session, to tell a regenerate or a correction of it."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    async def follow(self, job: TurnJob, turn: str) -> tuple[str, Receipt] | None:
        """Record ``turn``; the session's previous one, with its completion's receipt."""
        record = orjson.dumps({"turn": turn, "receipt": job.receipt.to_json()})
        previous = await self._shared.swap(_scope_key("turn", job.scope), record, _LAST_TURN_TTL_S)
        if previous is None:
            return None
        body = orjson.loads(previous)
        return str(body["turn"]), Receipt.from_json(body["receipt"])

    @staticmethod
    def signal(previous_turn: str, turn: str) -> tuple[str, float] | None:
        if is_regenerate(previous_turn, turn):
            return "regenerate", REGENERATE_WEIGHT
        if is_correction(turn):
            return "correction", CORRECTION_WEIGHT
        return None


class CaptureQueue:
    """The owned background worker: completed exchanges become memories, signals outcomes."""

    def __init__(
        self,
        memories: MemoryService,
        shared: SharedState,
        receipts: ReceiptStore,
        calibration: CalibrationBook,
        metrics: Metrics | None = None,
        *,
        chains: ChainContext | None = None,
        maxsize: int = 10_000,
    ) -> None:
        self._memories = memories
        self._chains = chains
        self._receipts = receipts
        self._calibration = calibration
        self._metrics = metrics
        self._queue: asyncio.Queue[CaptureJob | TurnJob | DeferredJob] = asyncio.Queue(maxsize)
        self._ledger = CaptureLedger(shared)
        self._signals = SessionSignals(shared)
        self._worker: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="memshadow-capture")

    async def aclose(self) -> None:
        """Capture what is queued, then stop."""
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def submit(self, job: CaptureJob | TurnJob | DeferredJob) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.capture_dropped.inc()
            logger.warning("capture queue full: an exchange was not captured")

    async def drain(self) -> None:
        """Wait until every submitted exchange is stored (tests, shutdown)."""
        await self._queue.join()

    @property
    def depth(self) -> int:
        """Jobs waiting for the worker (the ingestion backlog the dashboard shows)."""
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if isinstance(job, TurnJob):
                    await self._follow(job)
                elif isinstance(job, DeferredJob):
                    if (resolved := await job.resolve()) is not None:
                        await self._capture(resolved)
                else:
                    await self._capture(job)
            except Exception:  # a bad exchange must not stop capture for everyone
                logger.exception("capture failed for one exchange; it was not stored")
            finally:
                self._queue.task_done()

    async def _follow(self, job: TurnJob) -> None:
        turn = job.last_user_turn()
        try:
            previous = await self._signals.follow(job, turn)
        except SharedStateUnavailable:
            return  # the shared state logged the outage; this turn is not compared
        if previous is None or not previous[1].memories:
            return
        signal = self._signals.signal(previous[0], turn)
        if signal is not None:
            await self._credit(signal[0], previous[1], previous[1].injected_ids, signal[1])

    async def _credit(self, kind: str, receipt: Receipt, ids: list[str], weight: float) -> None:
        """Apply an implicit outcome once per completion and kind (usefulness + calibration)."""
        names = {f"signal:{kind}:{i}": i for i in ids}
        try:
            fresh = await credit_once(self._receipts, self._memories, receipt, names, weight, "1")
        except SharedStateUnavailable:
            return  # the outcome is lost; it could not be told apart from a repeat
        if not fresh:
            return
        if receipt.raw_confidence is not None:
            await self._calibration.record(
                receipt.tenant, receipt.raw_confidence, weight > 0, abs(weight)
            )
        if self._metrics is not None:
            self._metrics.feedback.labels(kind).inc()
        events.info(
            "feedback received: tenant=%s kind=%s memories=%d", receipt.tenant, kind, len(fresh),
            extra={"event": "feedback.received", "tenant": receipt.tenant, "kind": kind,
                   "completion_id": receipt.completion_id, "value": weight, "memory_ids": fresh},
        )  # fmt: skip

    async def _capture(self, job: CaptureJob) -> None:
        answer = job.wire.parse_answer(job.chunks, job.streamed)
        response_id = job.receipt.completion_id if job.receipt is not None else None
        chains = self._chains if job.wire.chains and response_id else None
        # The request is read only when its turns are needed (a usage credit needs none).
        payload = orjson.loads(job.raw_request) if job.capture or chains is not None else {}
        messages = job.wire.conversation(payload)
        if chains is not None and response_id:
            keys = continued_as(payload, response_id)
            question = last_user_text(messages)
            await chains.note(job.scope.tenant, job.scope.user, keys, question, answer.text)
        if job.receipt is not None and job.receipt.contents:
            used = used_memories(answer.text, job.receipt.contents.items())
            if used:
                await self._credit("usage", job.receipt, used, USAGE_WEIGHT)
        if not job.capture:
            return
        turns = conversation_turns(messages)
        if answer.text:
            turns.append(Turn("assistant", answer.text))
        if not turns:
            return
        try:
            fresh = await self._ledger.claim(job.scope, turns)
            claimed = True
        except SharedStateUnavailable:
            # No ledger: store every turn, and let the engine's exact-duplicate check
            # reinforce the ones stored already instead of storing them twice.
            fresh, claimed = list({fingerprint(t): t for t in turns}.values()), False
        if fresh:
            await self._store(job, fresh, claimed, answer.text)

    async def _store(self, job: CaptureJob, turns: list[Turn], claimed: bool, answer: str) -> None:
        # The answer is claimed in the ledger as it was sent, since that is how the client
        # resends it with the history; it is stored without what it copied from the notes it
        # was given (stored already, or the block's own wording: see policies.echo). Turns
        # that say nothing on their own are claimed and not stored (policies.chatter).
        sent, own = Turn("assistant", answer), without_recalled(answer, job.recalled)
        own_turns = [Turn(t.role, own) if t == sent else t for t in turns if t != sent or own]
        kept = [t for t in own_turns if not is_chatter(t.text)]
        items = [
            {
                "content": turn.as_memory(),
                "tier": Tier.EPISODIC,
                "source": Source.CAPTURE,
                "metadata": {**job.metadata, "role": turn.role},
            }
            for turn in kept
        ]
        if not items:
            return
        try:
            stored = await self._memories.store(job.scope, items)
        except BaseException:
            if claimed:
                await self._ledger.release(job.scope, turns)
            raise
        events.info(
            "memory stored: tenant=%s source=capture count=%d", job.scope.tenant, len(stored),
            extra={"event": "memory.stored", "tenant": job.scope.tenant, "source": "capture",
                   "memory_ids": [m.id for m in stored]},
        )  # fmt: skip


class AnswerObserver(StreamObserver):
    """Sees the answer go by: learns its completion id, collects it for capture."""

    def __init__(
        self,
        on_completion_id: Callable[[str], None],
        on_complete: Callable[[list[bytes]], None] | None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self._on_completion_id: Callable[[str], None] | None = on_completion_id
        self._on_complete = on_complete
        self._on_finish = on_finish
        self._chunks: list[bytes] = []

    def on_chunk(self, chunk: bytes) -> None:
        if self._on_completion_id is not None:
            match = _COMPLETION_ID.search(chunk)
            if match:
                self._on_completion_id(match.group(1).decode())
                self._on_completion_id = None
        if self._on_complete is not None:
            self._chunks.append(chunk)

    def on_end(self, completed: bool) -> None:
        if self._on_finish is not None:
            self._on_finish()
        if completed and self._on_complete is not None:
            self._on_complete(self._chunks)
