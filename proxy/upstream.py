"""Talking to model providers: OpenAI-compatible ones over pooled httpx, the rest via LiteLLM.

Both backends return the same two shapes, an :class:`UpstreamReply` (whole body) or an
:class:`UpstreamStream` (SSE bytes as they arrive), always in OpenAI's wire format. Upstream
failures are converted to :mod:`proxy.errors` here and only here: an upstream HTTP error keeps
its status and message, an unreachable upstream is a 502, a timeout a 504.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import aiohttp
import httpx
import orjson

from proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.routing import Target

# Response headers worth handing back to the client: rate limits and provider diagnostics.
_RELAYED_PREFIXES = ("x-ratelimit-", "openai-", "anthropic-ratelimit-")
_RELAYED_NAMES = frozenset({"retry-after", "retry-after-ms"})
# What a relayed answer of any kind also needs (decoded: content-encoding is not relayed).
_RELAYED_CONTENT = ("content-type", "content-disposition")
# Request headers the caller may aim at the provider. Authorization is never among them:
# the caller's bearer token is its MemShadow key, not a provider credential.
_FORWARDED_REQUEST_HEADERS = ("openai-organization", "openai-project", "openai-beta")


@dataclass(slots=True)
class UpstreamReply:
    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamStream:
    """An open SSE stream. Iterate ``chunks`` once; ``aclose`` releases the connection."""

    status_code: int
    chunks: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]]
    headers: dict[str, str] = field(default_factory=dict)


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name in _RELAYED_NAMES or name.startswith(_RELAYED_PREFIXES)
    }


def forwarded_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in headers}


def upstream_error(status_code: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """The upstream's own error, same status, its message and code when it sent OpenAI's shape."""
    detail: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        detail = orjson.loads(body)
    error = detail.get("error") if isinstance(detail, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or f"upstream returned HTTP {status_code}")
        return UpstreamError(
            message,
            status_code=status_code,
            type=str(error.get("type") or "upstream_error"),
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            code=str(error["code"]) if error.get("code") is not None else None,
            headers=relayed_headers(headers),
        )
    if isinstance(error, str):
        message = error
    else:
        text = body.decode("utf-8", "replace").strip()[:500]
        message = text or f"upstream returned HTTP {status_code}"
    return UpstreamError(message, status_code=status_code, headers=relayed_headers(headers))


def _timed_out(exc: httpx.TransportError) -> bool:
    # The aiohttp transport reports a refused or dropped connection as ConnectTimeout; only
    # a real timeout underneath (aiohttp's timeouts subclass TimeoutError) is a 504.
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    return not isinstance(cause, aiohttp.ClientError) or isinstance(cause, TimeoutError)


@contextlib.contextmanager
def map_transport_errors(target: str) -> Iterator[None]:
    """httpx transport failures → 502/504, naming the upstream but never its credentials."""
    try:
        yield
    except httpx.TransportError as exc:
        if _timed_out(exc):
            raise UpstreamTimeout(f"upstream {target} timed out ({type(exc).__name__})") from exc
        raise UpstreamUnavailable(f"upstream {target} is unreachable: {exc!s}") from exc


class OpenAIUpstream:
    """Any OpenAI-compatible server, over one pooled ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._timeout = client.timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, raw: str) -> httpx.URL:
        # Parsing a URL costs tens of microseconds and upstream URLs are few: parse each once.
        url = self._urls.get(raw)
        if url is None:
            if len(self._urls) > 1024:
                self._urls.clear()
            url = self._urls[raw] = httpx.URL(raw)
        return url

    def _request(
        self,
        target: Target,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        content_type: str = "application/json",
    ) -> httpx.Request:
        outgoing = dict(headers)
        if body is not None:
            outgoing["content-type"] = content_type
        if target.api_key:
            outgoing["authorization"] = f"Bearer {target.api_key}"
        # Built directly rather than with client.build_request: nothing to merge (no base URL,
        # params or cookies), and that merging is a measurable share of a proxied request.
        return httpx.Request(
            method,
            self._url(f"{target.base_url}/{path}"),
            content=body,
            headers=outgoing,
            extensions={"timeout": self._timeout},
        )

    async def request(
        self,
        target: Target,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        request = self._request(target, method, path, body, headers or {})
        with map_transport_errors(target.base_url or ""):
            response = await self._client.send(request)
        if response.status_code >= 400:
            raise upstream_error(response.status_code, response.content, response.headers)
        return UpstreamReply(
            response.status_code, response.content, relayed_headers(response.headers)
        )

    async def probe(self, target: Target, *, timeout_s: float) -> None:
        """Raise ``httpx.HTTPError`` unless the upstream answers HTTP within ``timeout_s``."""
        request = self._request(target, "GET", "models", None, {})
        request.extensions["timeout"] = httpx.Timeout(timeout_s).as_dict()
        response = await self._client.send(request)
        await response.aclose()

    async def stream(
        self, target: Target, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> UpstreamStream:
        request = self._request(target, "POST", path, body, headers or {})
        response, chunks = await self._open(target, request)
        if response.status_code >= 400:
            with map_transport_errors(target.base_url or ""):
                content = await response.aread()
            await response.aclose()
            raise upstream_error(response.status_code, content, response.headers)
        return UpstreamStream(
            response.status_code, chunks, response.aclose, relayed_headers(response.headers)
        )

    async def relay(
        self,
        target: Target,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        content_type: str | None,
    ) -> UpstreamStream:
        """Any other request to the upstream, its answer handed back as it arrives, whatever
        it is (JSON, SSE, audio, a file) and whatever its status: an error keeps the
        upstream's status and body, as the caller would have had it from the provider."""
        request = self._request(
            target, method, path, body, headers, content_type or "application/octet-stream"
        )
        response, chunks = await self._open(target, request)
        kept = relayed_headers(response.headers)
        for name in _RELAYED_CONTENT:
            if name in response.headers:
                kept[name] = response.headers[name]
        return UpstreamStream(response.status_code, chunks, response.aclose, kept)

    async def _open(
        self, target: Target, request: httpx.Request
    ) -> tuple[httpx.Response, AsyncIterator[bytes]]:
        """Send ``request``; the response with its body not read yet, and the body's chunks."""
        with map_transport_errors(target.base_url or ""):
            response = await self._client.send(request, stream=True)

        async def chunks() -> AsyncIterator[bytes]:
            with map_transport_errors(target.base_url or ""):
                # Decoded bytes: content-encoding is not relayed, so neither is compression.
                async for chunk in response.aiter_bytes():
                    yield chunk

        return response, chunks()


def _load_litellm() -> ModuleType:
    # Without this LiteLLM downloads its model price map at import: no network calls at run
    # time, and the bundled copy is what the budget reads context windows from.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = importlib.import_module("litellm")
    setattr(litellm, "telemetry", False)  # noqa: B010 - untyped module attributes
    setattr(litellm, "suppress_debug_info", True)  # noqa: B010
    return litellm


def _headline(exc: Exception) -> str:
    """LiteLLM puts tracebacks and bug-report links in its messages; clients get line one."""
    message = str(getattr(exc, "message", None) or exc)
    return message.strip().splitlines()[0][:1000] if message.strip() else type(exc).__name__


class LiteLLMUpstream:
    """Providers that do not speak OpenAI's format (Anthropic, Gemini, Bedrock, …).

    LiteLLM is imported on first use: it takes seconds, and deployments that only talk to
    OpenAI-compatible servers never pay for it.
    """

    def __init__(self, loader: Callable[[], ModuleType] = _load_litellm) -> None:
        self._loader = loader
        self._module: ModuleType | None = None

    @property
    def litellm(self) -> ModuleType:
        if self._module is None:
            self._module = self._loader()
        return self._module

    def _arguments(self, target: Target, payload: Mapping[str, Any]) -> dict[str, Any]:
        arguments: dict[str, Any] = {"drop_params": True, **payload, **target.params}
        arguments["model"] = target.model
        if target.api_key:
            arguments["api_key"] = target.api_key
        if target.base_url:
            arguments["api_base"] = target.base_url
        return arguments

    @contextlib.contextmanager
    def _map_errors(self, target: Target) -> Iterator[None]:
        import openai  # LiteLLM's exceptions subclass openai's; both are installed together.

        try:
            yield
        except openai.APITimeoutError as exc:
            raise UpstreamTimeout(f"{target.provider} timed out: {_headline(exc)}") from exc
        except openai.APIConnectionError as exc:
            raise UpstreamUnavailable(
                f"{target.provider} is unreachable: {_headline(exc)}"
            ) from exc
        except openai.APIStatusError as exc:
            raise UpstreamError(
                _headline(exc), status_code=exc.status_code, code=exc.code, param=exc.param
            ) from exc

    def _call(self, path: str) -> Callable[..., Any]:
        """LiteLLM's function for an OpenAI API path: its answers come in that API's format."""
        call: Callable[..., Any] = (
            self.litellm.aresponses if path == "responses" else self.litellm.acompletion
        )
        return call

    async def complete(
        self, target: Target, payload: Mapping[str, Any], path: str = "chat/completions"
    ) -> UpstreamReply:
        with self._map_errors(target):
            response = await self._call(path)(**self._arguments(target, payload))
        return UpstreamReply(200, response.model_dump_json(exclude_none=True).encode())

    async def stream(
        self, target: Target, payload: Mapping[str, Any], path: str = "chat/completions"
    ) -> UpstreamStream:
        with self._map_errors(target):
            stream = await self._call(path)(**self._arguments(target, payload))
            iterator = stream.__aiter__()
            # Pull the first chunk now so a provider error becomes an HTTP status, not a
            # broken stream after a 200.
            first = await anext(iterator, None)
        # Chat chunks are bare data lines ended by [DONE]; Responses events are named.
        named = path == "responses"

        async def chunks() -> AsyncIterator[bytes]:
            chunk = first
            with self._map_errors(target):
                while chunk is not None:
                    data = chunk.model_dump_json(exclude_none=True).encode()
                    event = b""
                    if named:  # LiteLLM's event type is an enum
                        event = f"event: {getattr(chunk.type, 'value', chunk.type)}\n".encode()
                    yield event + b"data: " + data + b"\n\n"
                    chunk = await anext(iterator, None)
            if not named:
                yield b"data: [DONE]\n\n"

        async def aclose() -> None:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

        return UpstreamStream(200, chunks(), aclose)

    async def embed(self, target: Target, payload: Mapping[str, Any]) -> UpstreamReply:
        arguments = self._arguments(target, payload)
        arguments.pop("drop_params", None)
        with self._map_errors(target):
            response = await self.litellm.aembedding(**arguments)
        return UpstreamReply(200, response.model_dump_json(exclude_none=True).encode())
