"""Transparent memory for model calls: decide → recall → budget → format → place, then capture.

This is glue: every decision is a pure function in ``policies/``, every rendering one in
``formatters/``, recall lives in ``memory/``. What this module adds is the fail-open rule:
recall runs under the policy's deadline, and any failure on the memory side forwards the
request untouched with ``X-Memory-Status: degraded``, a metric and a log line (one per
tenant and reason per 10 s: an overload sheds memory from hundreds of requests a second).
That includes the shared state being down (reason ``shared_state``): this replica could
then neither keep the receipt that feedback needs nor promise that a memory forgotten
through another replica is not injected. Nothing here waits for the shared state before
forwarding, but for what a chained Responses request continues (``proxy.chains``), read
inside the recall deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from formatters import Note, family_for, render_block
from formatters.openai import instruction_role
from memory.conversation import query_embedding_text, recall_query, text_of
from memory.model import RecallResult, Scope
from memory.service import MemoryService
from memory.tokens import TokenCounter
from policies.budget import Candidate, Packed, memory_budget, pack
from policies.decision import Decision, MemoryPolicy, PolicyInputError, decide, tenant_policy
from proxy.admission import RecallAdmission
from proxy.background import BackgroundResponses
from proxy.capture import AnswerObserver, CaptureJob, CaptureQueue, DeferredJob, TurnJob
from proxy.chains import ChainContext
from proxy.errors import InvalidRequest
from proxy.feedback import CalibrationBook
from proxy.log_throttle import LogThrottle
from proxy.metrics import Metrics
from proxy.model_info import context_window
from proxy.pipeline import ChatContext, Injection
from proxy.receipts import InjectedMemory, Receipt, ReceiptStore
from proxy.schemas import ResponsesRequest
from proxy.shared_state import SharedState
from proxy.streaming import StreamObserver
from proxy.wire import continues

logger = logging.getLogger("memshadow.injection")
events = logging.getLogger("memshadow.events")

# Tokens the chat format adds around each message (role, separators), per OpenAI's cookbook.
_TOKENS_PER_MESSAGE = 4
# A note's date and bullet cost a few tokens on top of its content.
_TOKENS_PER_NOTE = 8
# One "memory degraded" warning per tenant and reason per this many seconds.
_DEGRADED_LOG_INTERVAL_S = 10.0


def prompt_tokens(messages: Sequence[dict[str, Any]], count: TokenCounter) -> int:
    return sum(count.count(text_of(m.get("content"))) + _TOKENS_PER_MESSAGE for m in messages)


def prompt_tokens_bound(messages: Sequence[dict[str, Any]]) -> int:
    """An upper bound on :func:`prompt_tokens` without tokenising: a token is at least a byte."""
    return sum(len(text_of(m.get("content")).encode()) + _TOKENS_PER_MESSAGE for m in messages)


def completion_reserve(
    payload: Mapping[str, Any], fields: Sequence[str], policy: MemoryPolicy
) -> int:
    for field in fields:
        value = payload.get(field)
        if isinstance(value, int) and value > 0:
            return value
    return policy.default_completion_reserve


def candidates_of(result: RecallResult) -> list[Candidate]:
    return [
        Candidate(
            id=r.memory.id,
            content=r.memory.content,
            tokens=r.memory.tokens,
            score=r.score,
            created_at=r.memory.created_at,
        )
        for r in result.items
    ]


class MemoryInjector:
    """The :class:`proxy.pipeline.ChatMemory` that gives chat requests long-term memory."""

    def __init__(
        self,
        memories: MemoryService,
        capture: CaptureQueue,
        receipts: ReceiptStore,
        calibration: CalibrationBook,
        metrics: Metrics,
        shared: SharedState,
        *,
        policy: MemoryPolicy,
        windows: Mapping[str, int],
        tokens: TokenCounter | None = None,
        max_inflight: int = 16,
        chains: ChainContext | None = None,
        background: BackgroundResponses | None = None,
    ) -> None:
        self._memories = memories
        self._chains = chains
        self._background = background
        self._capture = capture
        self._receipts = receipts
        self._calibration = calibration
        self._metrics = metrics
        self._shared = shared
        self._admission = RecallAdmission(max_inflight)
        self._log_throttle = LogThrottle(_DEGRADED_LOG_INTERVAL_S)
        metrics.recall_limit.set(self._admission.limit)  # not 0 until the first recall ends
        self._policy = policy
        self._windows = windows
        self._tokens = tokens or TokenCounter()
        self._block_overhead = self._tokens.count(render_block("openai", [])) + _TOKENS_PER_MESSAGE

    def _decide(self, context: ChatContext) -> Decision:
        try:
            policy = tenant_policy(self._policy, context.caller.tenant.policy)
        except PolicyInputError as error:
            logger.warning(
                "tenant %s has an invalid policy (%s); using the default",
                context.caller.tenant.id,
                error,
            )
            policy = self._policy
        try:
            return decide(context.headers, context.call.user, policy)
        except PolicyInputError as error:
            raise InvalidRequest(str(error), param=error.field, code="invalid_header") from None

    async def inject(self, context: ChatContext) -> Injection:
        decision = self._decide(context)
        scope = Scope(tenant=context.caller.tenant.id, user=decision.user, session=decision.session)
        receipt = Receipt(context.request_id, scope.tenant, scope.user, scope.session, "off")
        if not decision.inject:
            return Injection(status="off", decision=decision, scope=scope, receipt=receipt)
        started = time.perf_counter()
        if not self._shared.healthy:
            return self._degraded(scope, decision, receipt, "shared_state", 0.0)
        deadline_s = decision.policy.recall_deadline_ms / 1000
        if not await self._admission.acquire(deadline_s):
            # Every recall slot stayed busy for the whole deadline: shed memory, never the
            # request (see proxy.admission for why it waits here and not in a thread queue).
            return self._degraded(
                scope, decision, receipt, "overload", time.perf_counter() - started
            )
        admitted = time.perf_counter()
        work = asyncio.ensure_future(self._recall_and_place(context, decision, scope, receipt))

        def finished(work: asyncio.Future[Injection]) -> None:
            now = time.perf_counter()
            self._admission.release(now - admitted, deadline_s, now)
            self._metrics.recall_limit.set(self._admission.limit)
            if not work.cancelled() and work.exception() is not None:
                logger.debug("recall failed: %r", work.exception())

        work.add_done_callback(finished)
        try:
            remaining_s = deadline_s - (admitted - started)
            done, _ = await asyncio.wait((work,), timeout=remaining_s)
            if work in done:
                return work.result()
            reason = "deadline"
        except Exception as error:  # fail open: memory must never fail a chat request
            reason = type(error).__name__
        return self._degraded(scope, decision, receipt, reason, time.perf_counter() - started)

    def _degraded(
        self, scope: Scope, decision: Decision, receipt: Receipt, reason: str, seconds: float
    ) -> Injection:
        elapsed = seconds * 1000
        # The shared-state outage is logged once, where it is noticed; the rest once per
        # tenant and reason per interval (see proxy.log_throttle), the metric counts them all.
        if (
            reason != "shared_state"
            and (held := self._log_throttle.admit((scope.tenant, reason), time.monotonic()))
            is not None
        ):
            logger.warning(
                "memory degraded for tenant %s (%s after %.1f ms): forwarding unmodified%s",
                scope.tenant,
                reason,
                elapsed,
                f" ({held} more since the last such line)" if held else "",
            )
        self._metrics.memory_degraded.labels(reason).inc()
        receipt.status = "degraded"
        receipt.timings_ms["recall"] = round(elapsed, 2)
        return Injection(status="degraded", decision=decision, scope=scope, receipt=receipt)

    async def _recall_and_place(
        self, context: ChatContext, decision: Decision, scope: Scope, receipt: Receipt
    ) -> Injection:
        started = time.perf_counter()
        payload = orjson.loads(context.raw_body)
        messages = context.wire.conversation(payload)
        policy = decision.policy
        # Recall spans all of the user's sessions: that is what long-term memory is for. The
        # session only scopes what this conversation's capture is filed under.
        user_scope = Scope(tenant=scope.tenant, user=scope.user)
        asked = messages
        if self._chains is not None and context.wire.chains and (continued := continues(payload)):
            # Only the new input is in the body; what it follows shapes the query too.
            asked = [*await self._chains.before(scope.tenant, scope.user, continued), *messages]
        query = recall_query(asked)
        result = await self._memories.search(
            user_scope, query, k=policy.candidates, embed_as=query_embedding_text(asked, query)
        )
        receipt.timings_ms["recall"] = round((time.perf_counter() - started) * 1000, 2)
        confidence = self._calibration.confidence(scope.tenant, result.confidence)
        receipt.confidence, receipt.raw_confidence = confidence, result.confidence
        receipt.question = result.question
        threshold = self._calibration.threshold(scope.tenant, policy)
        packed = []
        if result.items and confidence >= threshold:
            packed = self._pack(context, payload, messages, policy, result, receipt)
        if not packed:
            receipt.status = "abstained"
            self._metrics.abstained.inc()
            events.info(
                "injection abstained: tenant=%s confidence=%.3f threshold=%.3f",
                scope.tenant, confidence, threshold,
                extra={"event": "injection.abstained", "tenant": scope.tenant,
                       "request_id": context.request_id, "confidence": confidence,
                       "threshold": threshold},
            )  # fmt: skip
            return Injection(
                "abstained", confidence=confidence, decision=decision, scope=scope, receipt=receipt
            )
        body, block, block_tokens = self._place(context, payload, messages, policy, packed)
        receipt.status, receipt.placement, receipt.tokens = "ok", policy.placement, block_tokens
        receipt.memories = [
            InjectedMemory(p.candidate.id, round(p.candidate.score, 4), p.tokens, p.truncated)
            for p in packed
        ]
        receipt.contents = {p.candidate.id: p.content for p in packed}
        receipt.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)
        return Injection(
            "ok", body=body, block=block, injected=len(packed), tokens=block_tokens,
            confidence=confidence, decision=decision, scope=scope, receipt=receipt,
        )  # fmt: skip

    def _pack(
        self,
        context: ChatContext,
        payload: Mapping[str, Any],
        messages: Sequence[dict[str, Any]],
        policy: MemoryPolicy,
        result: RecallResult,
        receipt: Receipt,
    ) -> list[Packed]:
        window = (
            context.target.context_window
            or context_window(self._windows, context.target.model)
            or policy.default_context_window
        )
        overhead = self._block_overhead

        def budget_for(prompt: int) -> int:
            return memory_budget(
                context_window=window,
                prompt_tokens=prompt + overhead,
                completion_reserve=completion_reserve(
                    payload, context.wire.completion_fields, policy
                ),
                cap=max(0, policy.max_memory_tokens - overhead),
                fraction=policy.budget_fraction,
            )

        # Tokenising a long conversation costs milliseconds; when even the byte-count upper
        # bound leaves room for the whole cap, the exact count cannot change the budget.
        cap = max(0, policy.max_memory_tokens - overhead)
        budget = budget_for(prompt_tokens_bound(messages))
        if budget < cap:
            budget = budget_for(prompt_tokens(messages, self._tokens))
        receipt.budget = budget
        return pack(
            candidates_of(result), budget, self._tokens.count, per_item_overhead=_TOKENS_PER_NOTE
        )

    def _place(
        self,
        context: ChatContext,
        payload: dict[str, Any],
        messages: list[dict[str, Any]],
        policy: MemoryPolicy,
        packed: list[Packed],
    ) -> tuple[bytes, str, int]:
        target = context.target
        family = family_for(target.provider, target.model)
        dated = sorted(
            packed, key=lambda p: (p.candidate.created_at is None, p.candidate.created_at)
        )
        block = render_block(family, [Note(p.content, p.candidate.created_at) for p in dated])
        role = instruction_role(target.model, messages) if family == "openai" else "system"
        placed = context.wire.place_block(payload, block, policy.placement, role)
        return orjson.dumps(placed), block, self._tokens.count(block)

    def withdraw(self, injection: Injection, reason: str) -> Injection:
        receipt, scope, decision = injection.receipt, injection.scope, injection.decision
        if receipt is None or scope is None or decision is None:
            return injection
        receipt.memories, receipt.contents, receipt.tokens = [], {}, 0
        recall_s = receipt.timings_ms.get("recall", 0.0) / 1000
        return self._degraded(scope, decision, receipt, reason, recall_s)

    def observe(self, context: ChatContext, injection: Injection) -> StreamObserver:
        receipt, scope, decision = injection.receipt, injection.scope, injection.decision
        if receipt is None or scope is None or decision is None:
            return StreamObserver()

        background = (
            self._background
            if isinstance(context.call, ResponsesRequest) and context.call.background
            else None
        )

        def on_completion_id(completion_id: str) -> None:
            self._receipts.put(completion_id, receipt)

        def on_complete(chunks: list[bytes]) -> None:
            metadata = {"request_id": context.request_id}
            if receipt.completion_id:
                metadata["completion_id"] = receipt.completion_id
            job = CaptureJob(
                scope, context.wire, context.raw_body, chunks, context.call.stream, metadata,
                capture=decision.capture, receipt=receipt, recalled=injection.block,
            )  # fmt: skip
            if background is not None and receipt.completion_id:
                # Queued: the answer comes later, to whoever polls for it (proxy.background).
                family = family_for(context.target.provider, context.target.model)
                started = partial(background.started, job, receipt.completion_id, family)
                self._capture.submit(DeferredJob(started))
            else:
                self._capture.submit(job)

        def on_finish() -> None:
            self._capture.submit(TurnJob(scope, context.wire, context.raw_body, receipt))

        # Collect the answer to capture it, to see whether it used what was injected, or to
        # note what a chained follow-up continues (proxy.chains).
        chained = context.wire.chains and decision.inject
        wanted = decision.capture or bool(receipt.contents) or chained
        return AnswerObserver(on_completion_id, on_complete if wanted else None, on_finish)

    def background_answer(
        self, tenant: str, response_id: str, streamed: bool
    ) -> StreamObserver | None:
        background = self._background
        if background is None:
            return None

        def on_complete(chunks: list[bytes]) -> None:
            polled = partial(background.finished, tenant, response_id, chunks, streamed)
            self._capture.submit(DeferredJob(polled))

        return AnswerObserver(lambda _: None, on_complete)
