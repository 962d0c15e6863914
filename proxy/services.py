"""The collaborators built once in the lifespan, and how routes reach them."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from config import Settings
from memory.service import MemoryService
from proxy.auth import AdminGuard, Authenticator
from proxy.capture import CaptureQueue
from proxy.feedback import CalibrationBook
from proxy.keys import TenantRegistry
from proxy.metrics import Metrics
from proxy.pipeline import ChatMemory
from proxy.rate_limit import RateLimiter
from proxy.receipts import ReceiptStore
from proxy.routing import ModelRouter
from proxy.upstream import LiteLLMUpstream, OpenAIUpstream


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    registry: TenantRegistry
    auth: Authenticator
    admin: AdminGuard
    router: ModelRouter
    openai: OpenAIUpstream
    litellm: LiteLLMUpstream
    chat_memory: ChatMemory
    memories: MemoryService | None
    capture: CaptureQueue | None
    receipts: ReceiptStore
    calibration: CalibrationBook
    metrics: Metrics
    limiter: RateLimiter


def get_services(request: Request) -> Services:
    services: Services = request.state.services
    return services
