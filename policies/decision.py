"""Per-request memory decisions: scope, mode, and the tenant's memory policy.

Pure: headers, the body's ``user`` and the tenant's policy in, a :class:`Decision` out. Bad
header values raise :class:`PolicyInputError`, which the proxy reports as a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MemoryMode = Literal["on", "read", "write", "off"]
Placement = Literal["before_last_user", "system_append", "user_prefix"]

DEFAULT_USER = "default"
MAX_SCOPE_CHARS = 256


class PolicyInputError(ValueError):
    """A request or policy value that cannot be honoured; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class MemoryPolicy(BaseModel):
    """A tenant's memory policy; each tenant may override any field (``policy`` in admin API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: MemoryMode = "on"
    placement: Placement = "before_last_user"
    max_memory_tokens: int = Field(default=1000, ge=0)
    budget_fraction: float = Field(default=0.25, gt=0, le=1)
    candidates: int = Field(default=24, ge=1, le=200)
    recall_deadline_ms: float = Field(default=60.0, gt=0)
    confidence_threshold: float = Field(default=0.2, ge=0, le=1)
    target_precision: float = Field(default=0.7, gt=0, le=1)
    default_completion_reserve: int = Field(default=1024, ge=0)
    default_context_window: int = Field(default=8192, ge=512)
    # Model calls (chat, responses, forwarded) a tenant may send per minute (all replicas).
    requests_per_minute: int | None = Field(default=None, ge=1)


def tenant_policy(base: MemoryPolicy, overrides: Mapping[str, Any]) -> MemoryPolicy:
    """The deployment's policy with a tenant's overrides applied (validated)."""
    if not overrides:
        return base
    try:
        return MemoryPolicy.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise PolicyInputError(f"policy.{field}", f"policy.{field}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class Decision:
    """What memory does for one request."""

    user: str
    session: str | None
    mode: MemoryMode
    policy: MemoryPolicy

    @property
    def inject(self) -> bool:
        return self.mode in ("on", "read")

    @property
    def capture(self) -> bool:
        return self.mode in ("on", "write")


def _scope_value(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_SCOPE_CHARS or not value.isprintable():
        raise PolicyInputError(
            field, f"{field} must be printable and at most {MAX_SCOPE_CHARS} characters"
        )
    return value


def decide(headers: Mapping[str, str], body_user: str | None, policy: MemoryPolicy) -> Decision:
    """Scope from ``X-Memory-User`` / body ``user`` / default; mode from ``X-Memory-Mode``."""
    raw_mode = headers.get("x-memory-mode")
    mode: MemoryMode = policy.mode
    if raw_mode is not None:
        candidate = raw_mode.strip().lower()
        if candidate not in get_args(MemoryMode):
            raise PolicyInputError(
                "X-Memory-Mode",
                f"X-Memory-Mode must be one of on, read, write, off; got {raw_mode!r}",
            )
        mode = candidate  # type: ignore[assignment]
    user = _scope_value("X-Memory-User", headers.get("x-memory-user")) or _scope_value(
        "user", body_user
    )
    session = _scope_value("X-Memory-Session", headers.get("x-memory-session"))
    return Decision(user=user or DEFAULT_USER, session=session, mode=mode, policy=policy)
