"""The request bodies the proxy reads, and turning their validation errors into 400s.

Only the fields MemShadow owns are declared; everything else is kept as-is (``extra="allow"``)
and, when the proxy does not rewrite the request, the original bytes are forwarded untouched.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.errors import InvalidRequest

Model = TypeVar("Model", bound=BaseModel)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1)
    content: Any = None


class ModelRequest(BaseModel):
    """What every model call memory serves has: the model, streaming, the body's user."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = Field(default=False, strict=True)
    user: str | None = None


class ChatCompletionRequest(ModelRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)


class ResponsesRequest(ModelRequest):
    """``POST /v1/responses``: ``input`` is a string or a list of items (objects); it may be
    absent when a stored prompt or conversation supplies it."""

    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _string_or_items(cls, value: Any) -> Any:
        # Checked here, not left to the union, whose errors name its branches ("input.str").
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("expected a string or a list of input items")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValueError(f"item {index} is {type(item).__name__}; expected an object")
        return value

    store: bool | None = Field(default=None, strict=True)
    background: bool | None = Field(default=None, strict=True)
    max_output_tokens: int | None = Field(default=None, ge=1, strict=True)


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: Any


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """The first problem, naming the field as a dotted path (``messages.0.role``)."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "json_invalid":
        return InvalidRequest(
            f"We could not parse the JSON body of your request: {first['msg']}",
            code="invalid_json",
        )
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return InvalidRequest(message, param=param, code="invalid_value")


def parse_body(model: type[Model], raw: bytes) -> Model:
    if not raw.strip():
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_request(exc) from None
