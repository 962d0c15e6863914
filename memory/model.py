"""The memory model: what a memory is, what a caller may store, what recall returns.

``InvalidMemory`` names the offending field so the proxy can answer 400 with ``param`` set.
Timestamps are timezone-aware UTC everywhere; a naive timestamp from a caller is taken as UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

__all__ = [
    "MAX_SCOPE_CHARS",
    "InvalidMemory",
    "Memory",
    "NewMemory",
    "RecallResult",
    "Recalled",
    "Scope",
    "Source",
    "Tier",
    "check_scope_part",
    "content_hash",
    "parse_new_memory",
    "utcnow",
]

MAX_SCOPE_CHARS = 256
# A caller's clock may run a little fast; anything further in the future is a bug.
_MAX_FUTURE = timedelta(days=1)


class Tier(StrEnum):
    WORKING = "working"
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    LONG_TERM = "long_term"


class Source(StrEnum):
    API = "api"
    CAPTURE = "capture"
    IMPORT = "import"


class InvalidMemory(ValueError):
    """Bad input for the memory engine; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def utcnow() -> datetime:
    return datetime.now(UTC)


def content_hash(content: str) -> str:
    """Hash of the content as stored (after redaction); exact duplicates share it."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _invalid(error: ValidationError) -> InvalidMemory:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "item"
    return InvalidMemory(field, first["msg"].removeprefix("Value error, "))


def check_scope_part(field: str, value: str) -> str:
    if not value or not value.strip():
        raise InvalidMemory(field, "must not be empty")
    if len(value) > MAX_SCOPE_CHARS:
        raise InvalidMemory(field, f"must be at most {MAX_SCOPE_CHARS} characters")
    return value


class Scope(BaseModel):
    """Whose memory: always a tenant and a user, optionally one session."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    user: str
    session: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _invalid(error) from None

    @field_validator("tenant", "user", "session")
    @classmethod
    def _part_sane(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            return check_scope_part(str(info.field_name), value)
        except InvalidMemory as error:
            raise ValueError(error.message) from None


class NewMemory(BaseModel):
    """What a caller stores. ``created_at`` from the caller is kept, even far in the past."""

    model_config = ConfigDict(extra="forbid")

    content: str
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tier: Tier = Tier.LONG_TERM
    source: Source = Source.API

    @field_validator("content")
    @classmethod
    def _content_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("created_at")
    @classmethod
    def _timestamp_sane(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        if value > utcnow() + _MAX_FUTURE:
            raise ValueError("is in the future")
        return value


def parse_new_memory(raw: Mapping[str, Any] | NewMemory, *, max_chars: int) -> NewMemory:
    """Validate one item, raising :class:`InvalidMemory` naming the first bad field."""
    try:
        item = raw if isinstance(raw, NewMemory) else NewMemory.model_validate(dict(raw))
    except ValidationError as error:
        raise _invalid(error) from None
    if len(item.content) > max_chars:
        raise InvalidMemory("content", f"is {len(item.content)} characters; limit {max_chars}")
    return item


class Memory(BaseModel):
    """A stored memory. ``useful``/``not_useful`` are the Beta posterior's pseudo-counts."""

    id: str
    tenant: str
    user: str
    session: str | None = None
    tier: Tier
    source: Source
    content: str
    tokens: int
    content_hash: str
    created_at: datetime
    last_used_at: datetime
    useful: float = 0.0
    not_useful: float = 0.0
    reinforced: int = 0
    superseded_by: str | None = None
    archived: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Searchable: neither superseded by another memory nor archived."""
        return self.superseded_by is None and not self.archived


class Recalled(BaseModel):
    """One recall hit, with the component scores that made its final ``score``."""

    memory: Memory
    score: float
    vector: float
    keyword: float
    recency: float
    usefulness: float


class RecallResult(BaseModel):
    items: list[Recalled] = Field(default_factory=list)
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    # The key of the question recalled for (memory.outcomes), to file feedback under.
    question: str = ""
