"""The seam between the model routes and memory: inject before forwarding, capture after.

A route (chat completions or the Responses API, see ``proxy.wire``) runs ``policy → recall →
format`` through :meth:`ChatMemory.inject` and hands the answer to the observer from
:meth:`ChatMemory.observe` for capture. :class:`NoMemory` is what a deployment with memory
disabled runs: every request is forwarded untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from memory.model import Scope
from policies.decision import Decision
from proxy.auth import Caller
from proxy.receipts import Receipt
from proxy.routing import Target
from proxy.schemas import ModelRequest
from proxy.streaming import StreamObserver
from proxy.wire import Wire

MemoryStatus = Literal["ok", "abstained", "off", "degraded"]


@dataclass(frozen=True, slots=True)
class ChatContext:
    """Everything known about one model request (of ``wire``'s API) before it is forwarded."""

    request_id: str
    caller: Caller
    wire: Wire
    call: ModelRequest
    raw_body: bytes
    headers: Mapping[str, str]
    target: Target


@dataclass(frozen=True, slots=True)
class Injection:
    """What memory did to a request; ``body`` is the rewritten request, or None if untouched;
    ``block`` the memory block placed in it (capture cuts what an answer copies of it)."""

    status: MemoryStatus
    body: bytes | None = None
    block: str = ""
    injected: int = 0
    tokens: int = 0
    confidence: float | None = None
    decision: Decision | None = None
    scope: Scope | None = None
    receipt: Receipt | None = None

    def receipt_headers(self) -> dict[str, str]:
        headers = {
            "x-memory-status": self.status,
            "x-memory-injected": str(self.injected),
            "x-memory-tokens": str(self.tokens),
        }
        if self.confidence is not None:
            headers["x-memory-confidence"] = f"{self.confidence:.3f}"
        return headers


class ChatMemory(Protocol):
    async def inject(self, context: ChatContext) -> Injection: ...

    def withdraw(self, injection: Injection, reason: str) -> Injection:
        """The request goes without its block after all (the upstream refused it as too
        long): memory degraded for ``reason``, and the receipt credits nothing."""
        ...

    def observe(self, context: ChatContext, injection: Injection) -> StreamObserver:
        """An observer fed the answer (chunks of the body or the stream) for capture."""
        ...

    def background_answer(
        self, tenant: str, response_id: str, streamed: bool
    ) -> StreamObserver | None:
        """An observer for ``GET /v1/responses/{id}`` (``streamed``: ``?stream=true``) that
        captures a background response's answer once a poll finds it done, whichever
        replica started it (``proxy.background``); None when nothing is captured."""
        ...


class NoMemory:
    """Memory disabled: forward every request untouched and capture nothing."""

    _OFF = Injection(status="off")

    async def inject(self, context: ChatContext) -> Injection:
        return self._OFF

    def withdraw(self, injection: Injection, reason: str) -> Injection:
        return injection

    def observe(self, context: ChatContext, injection: Injection) -> StreamObserver:
        return StreamObserver()

    def background_answer(
        self, tenant: str, response_id: str, streamed: bool
    ) -> StreamObserver | None:
        return None
