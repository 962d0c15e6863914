"""Capture: after a completion finishes, its new turns become episodic memories.

The response path only collects bytes and enqueues; parsing the answer, working out which
turns are new and storing them happens in a worker the lifespan owns (and drains at
shutdown), so capture never delays a response. A failed or aborted upstream call captures
nothing. Clients resend the whole history every turn, so a per-scope ledger of turn
fingerprints keeps each turn from being stored twice; the engine's exact-duplicate check is
the second line behind it (across restarts and replicas).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from memory.conversation import Turn, conversation_turns, describe_tool_calls, text_of
from memory.model import Scope, Source, Tier
from memory.service import MemoryService
from policies.signals import (
    CORRECTION_WEIGHT,
    REGENERATE_WEIGHT,
    USAGE_WEIGHT,
    is_correction,
    is_regenerate,
    used_memories,
)
from proxy.feedback import CalibrationBook
from proxy.metrics import Metrics
from proxy.receipts import Receipt
from proxy.streaming import StreamObserver

logger = logging.getLogger("memshadow.capture")
events = logging.getLogger("memshadow.events")
_COMPLETION_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')
_LEDGER_SCOPES = 4096
_LEDGER_TURNS = 1024


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    streamed: bool


def parse_answer(chunks: list[bytes], streamed: bool) -> Answer:
    """The assistant's text (tool calls described) from a body or an SSE stream."""
    raw = b"".join(chunks)
    if not streamed:
        body = orjson.loads(raw)
        choices = body.get("choices") if isinstance(body, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else {}
        message = first.get("message") or {} if isinstance(first, dict) else {}
        parts = [message.get("content") or "", describe_tool_calls(message.get("tool_calls"))]
        return Answer("\n".join(p for p in parts if p).strip(), streamed=False)
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    for line in raw.splitlines():
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        event = orjson.loads(line[5:])
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
    described = describe_tool_calls([{"function": c} for c in calls.values()])
    return Answer("\n".join(p for p in ("".join(text), described) if p).strip(), streamed=True)


@dataclass(frozen=True, slots=True)
class CaptureJob:
    """A completed exchange: store its new turns (``capture``), credit memories it used."""

    scope: Scope
    raw_request: bytes
    chunks: list[bytes]
    streamed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    capture: bool = True
    receipt: Receipt | None = None


@dataclass(frozen=True, slots=True)
class SignalJob:
    """An implicit outcome for the memories injected into one earlier completion."""

    kind: str
    receipt: Receipt
    weight: float


def fingerprint(turn: Turn) -> str:
    return hashlib.blake2b(f"{turn.role}\0{turn.text}".encode(), digest_size=12).hexdigest()


class CaptureLedger:
    """Which turns of which scope were captured already (bounded, least recent dropped)."""

    def __init__(self) -> None:
        self._scopes: OrderedDict[Scope, OrderedDict[str, None]] = OrderedDict()

    def new_turns(self, scope: Scope, turns: list[Turn]) -> list[Turn]:
        seen = self._scopes.get(scope, OrderedDict())
        fresh, fresh_prints = [], set()
        for turn in turns:
            mark = fingerprint(turn)
            if mark not in seen and mark not in fresh_prints:
                fresh.append(turn)
                fresh_prints.add(mark)
        return fresh

    def remember(self, scope: Scope, turns: list[Turn]) -> None:
        seen = self._scopes.setdefault(scope, OrderedDict())
        self._scopes.move_to_end(scope)
        for turn in turns:
            seen[fingerprint(turn)] = None
        while len(seen) > _LEDGER_TURNS:
            seen.popitem(last=False)
        while len(self._scopes) > _LEDGER_SCOPES:
            self._scopes.popitem(last=False)


class CaptureQueue:
    """The owned background worker: completed exchanges become memories, signals outcomes."""

    def __init__(
        self,
        memories: MemoryService,
        calibration: CalibrationBook | None = None,
        metrics: Metrics | None = None,
        *,
        maxsize: int = 10_000,
    ) -> None:
        self._memories = memories
        self._calibration = calibration or CalibrationBook()
        self._metrics = metrics
        self._queue: asyncio.Queue[CaptureJob | SignalJob] = asyncio.Queue(maxsize)
        self._ledger = CaptureLedger()
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

    def submit(self, job: CaptureJob | SignalJob) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("capture queue full: an exchange was not captured")

    async def drain(self) -> None:
        """Wait until every submitted exchange is stored (tests, shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if isinstance(job, SignalJob):
                    await self._credit(
                        job.kind, job.receipt, list(job.receipt.contents), job.weight
                    )
                else:
                    await self._capture(job)
            except Exception:  # a bad exchange must not stop capture for everyone
                logger.exception("capture failed for one exchange; it was not stored")
            finally:
                self._queue.task_done()

    async def _credit(self, kind: str, receipt: Receipt, ids: list[str], weight: float) -> None:
        """Apply an implicit outcome once per completion and kind (usefulness + calibration)."""
        fresh = [i for i in ids if (kind, i) not in receipt.signals]
        if not fresh:
            return
        receipt.signals.update((kind, i) for i in fresh)
        await self._memories.record_usefulness(
            receipt.tenant, fresh, weight, user=receipt.user, question=receipt.question
        )
        if receipt.raw_confidence is not None:
            self._calibration.record(
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
        answer = parse_answer(job.chunks, job.streamed)
        if job.receipt is not None and job.receipt.contents:
            used = used_memories(answer.text, job.receipt.contents.items())
            if used:
                await self._credit("usage", job.receipt, used, USAGE_WEIGHT)
        if not job.capture:
            return
        request = orjson.loads(job.raw_request)
        turns = conversation_turns(request.get("messages") or [])
        if answer.text:
            turns.append(Turn("assistant", answer.text))
        fresh = self._ledger.new_turns(job.scope, turns)
        if not fresh:
            return
        items = [
            {
                "content": turn.as_memory(),
                "tier": Tier.EPISODIC,
                "source": Source.CAPTURE,
                "metadata": {**job.metadata, "role": turn.role},
            }
            for turn in fresh
        ]
        stored = await self._memories.store(job.scope, items)
        self._ledger.remember(job.scope, fresh)
        events.info(
            "memory stored: tenant=%s source=capture count=%d", job.scope.tenant, len(stored),
            extra={"event": "memory.stored", "tenant": job.scope.tenant, "source": "capture",
                   "memory_ids": [m.id for m in stored]},
        )  # fmt: skip


class SessionSignals:
    """Watches consecutive turns of a session for regenerates and corrections."""

    def __init__(self, queue: CaptureQueue) -> None:
        self._queue = queue
        self._last: OrderedDict[Scope, tuple[str, Receipt]] = OrderedDict()

    def observe_turn(self, scope: Scope, messages: list[Any], receipt: Receipt) -> None:
        turn = next((text_of(m.content) for m in reversed(messages) if m.role == "user"), "")
        previous = self._last.get(scope)
        self._last[scope] = (turn, receipt)
        self._last.move_to_end(scope)
        while len(self._last) > _LEDGER_SCOPES:
            self._last.popitem(last=False)
        if previous is None or not previous[1].contents:
            return
        if is_regenerate(previous[0], turn):
            self._queue.submit(SignalJob("regenerate", previous[1], REGENERATE_WEIGHT))
        elif is_correction(turn):
            self._queue.submit(SignalJob("correction", previous[1], CORRECTION_WEIGHT))


class AnswerObserver(StreamObserver):
    """Sees the answer go by: learns its completion id, collects it for capture."""

    def __init__(
        self,
        on_completion_id: Callable[[str], None],
        on_complete: Callable[[list[bytes]], None] | None,
    ) -> None:
        self._on_completion_id: Callable[[str], None] | None = on_completion_id
        self._on_complete = on_complete
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
        if completed and self._on_complete is not None:
            self._on_complete(self._chunks)
