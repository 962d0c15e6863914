"""The memory API as a blocking HTTP client, and the JSONL files the CLI sends through it.

Used by ``memshadow memories …`` (:mod:`proxy.cli_memories`), which owns presentation; this
module owns talking to the server: every failure — the server's OpenAI-shaped error, an
unreachable URL, a bad input line — becomes one :class:`Failure` with a one-line message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Chunk", "Failure", "MemoryClient", "raise_for_error", "read_chunks"]

# Imports and bulk adds are split so each request stays well under the server's body limit
# (8 MiB by default); an exported record with its vector is a few KiB.
_CHUNK_BYTES = 2 * 1024 * 1024
_TIMEOUT = httpx.Timeout(300.0, connect=5.0)  # an import returns once it is searchable


class Failure(Exception):
    """Something to tell the user in one line before exiting 1."""


class MemoryClient:
    """The memory API over one ``httpx.Client``; every failure surfaces as :class:`Failure`."""

    def __init__(self, url: str, key: str) -> None:
        # People paste their OPENAI_BASE_URL; the memory routes live under /v1 themselves.
        self.url = url.rstrip("/").removesuffix("/v1")
        with self._mapped():
            self._http = httpx.Client(
                base_url=self.url,
                headers={"authorization": f"Bearer {key}"},
                timeout=_TIMEOUT,
            )

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the decoded JSON body of a 2xx answer."""
        with self._mapped():
            response = self._http.request(method, path, **kwargs)
            raise_for_error(response)
            return response.json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed 2xx response; an error status is raised before any byte is handed out."""
        with self._mapped(), self._http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
            raise_for_error(response)
            yield response

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """The one place transport exceptions become messages that name the URL."""
        try:
            yield
        except httpx.ConnectError:
            raise Failure(
                f"cannot connect to MemShadow at {self.url}: is `memshadow serve` running "
                "there? Set --url or MEMSHADOW_URL."
            ) from None
        except httpx.TimeoutException:
            raise Failure(f"MemShadow at {self.url} did not answer in time.") from None
        except (httpx.TransportError, httpx.InvalidURL) as error:
            raise Failure(f"request to MemShadow at {self.url} failed: {error}") from None


def raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    status = f"HTTP {response.status_code}"
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        raise Failure(
            f"{status}: {response.text.strip()[:300] or response.reason_phrase}"
        ) from None
    details = [f"{name} {error[name]}" for name in ("param", "code") if error.get(name)]
    raise Failure(f"{message} ({', '.join([*details, status])})")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive records of a JSONL file, with where they came from (for messages)."""

    records: list[dict[str, Any]]
    first_line: int
    last_line: int
    size: int

    def where(self, path: Path) -> str:
        return f"{path.name} lines {self.first_line}-{self.last_line}"


def read_chunks(
    path: Path, *, batch_size: int, strings_as_content: bool = False
) -> Iterator[Chunk]:
    """JSON objects, one a line, grouped by count and by bytes; blank lines are skipped."""
    records: list[dict[str, Any]] = []
    first, size = 1, 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            size += len(line)
            if line.strip():
                records.append(_parse_line(path, number, line, strings_as_content))
            if len(records) >= batch_size or size >= _CHUNK_BYTES:
                yield Chunk(records, first, number, size)
                records, first, size = [], number + 1, 0
        if records:
            yield Chunk(records, first, number, size)


def _parse_line(path: Path, number: int, line: bytes, strings: bool) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as error:
        raise Failure(f"{path.name} line {number} is not JSON: {error}") from None
    if strings and isinstance(record, str):
        record = {"content": record}
    if not isinstance(record, dict):
        raise Failure(f"{path.name} line {number} is not a JSON object.")
    return record
