"""``memshadow memories add|search|list|export|import|forget``: a client of a running server.

The memory engine has a single writer per data dir (the running server owns its write-ahead
log), so these commands never open the store: they speak the HTTP memory API with a tenant
key, like any app. Any failure (the server's OpenAI-shaped error, an unreachable URL, a bad
input line) is one red line on stderr and exit code 1; progress bars and summaries also go
to stderr, so stdout carries only data (ids, tables, JSON, an export).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from memory.model import Tier
from proxy.memory_client import Failure, MemoryClient, read_chunks

__all__ = ["memories_app"]

memories_app = typer.Typer(
    no_args_is_help=True,
    help="Add, search, list, export, import and forget memories on a running MemShadow.",
)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="MEMSHADOW_URL", help="Root URL of the running MemShadow (/v1 optional)."
    ),
]
KeyOption = Annotated[
    str, typer.Option("--key", envvar="MEMSHADOW_KEY", help="Tenant API key.", show_default=False)
]
UserOption = Annotated[str, typer.Option("--user", help="Whose memories.")]
SessionOption = Annotated[str | None, typer.Option("--session", help="Session scope.")]
TierOption = Annotated[Tier | None, typer.Option("--tier", help="Memory tier.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_URL = "http://127.0.0.1:8080"
_EXISTING: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}
_FILE_HELP = "JSONL of items (or plain strings), one a line."

stdout = Console()
stderr = Console(stderr=True)


@contextmanager
def _connected(url: str, key: str) -> Iterator[MemoryClient]:
    try:
        with MemoryClient(url, key) as client:
            yield client
    except Failure as failure:
        # soft_wrap: one line, however narrow the terminal, so it greps and logs cleanly.
        stderr.print(f"[red]error:[/red] {escape(str(failure))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _progress(
    description: str, total: int | None, *, disable: bool = False
) -> tuple[Progress, TaskID]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeElapsedColumn(),
        console=stderr,
        disable=disable,
    )
    return progress, progress.add_task(description, total=total, records=0)


def _upload(
    verb: str, path: Path, send: Callable[[list[dict[str, Any]]], int], *, batch_size: int,
    strings: bool,
) -> int:  # fmt: skip
    """Send a JSONL file chunk by chunk behind a progress bar; returns what ``send`` counted."""
    progress, task = _progress(f"{verb} {path.name}", path.stat().st_size)
    done = 0
    with progress:
        for chunk in read_chunks(path, batch_size=batch_size, strings_as_content=strings):
            try:
                done += send(chunk.records)
            except Failure as failure:
                # The server numbers records within one request; say where that was in the file.
                raise Failure(f"{failure} [{chunk.where(path)}]") from None
            progress.update(task, advance=chunk.size, records=done)
    return done


def _given(**values: Any) -> dict[str, Any]:
    """Parameters the user set; the server applies its defaults to the rest."""
    return {name: value for name, value in values.items() if value is not None}


def _snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _day(timestamp: str | None) -> str:
    return (timestamp or "-")[:10]


def _scope(memory: dict[str, Any]) -> str:
    session = memory.get("session")
    return f"{memory['user']}/{session}" if session else str(memory["user"])


def _table(*columns: Column, caption: str | None = None) -> Table:
    """Ids are copied into `forget --id`, so never wrapped; content gets the room left."""
    table = Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption=caption)
    table.add_column("id", no_wrap=True)
    table.add_column("content", min_width=16, ratio=1)
    return table


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False))


@memories_app.command()
def add(
    key: KeyOption,
    content: Annotated[str | None, typer.Argument(help="The memory's text.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help=_FILE_HELP, **_EXISTING)] = None,
    tier: TierOption = None,
    created_at: Annotated[
        str | None, typer.Option("--created-at", help="ISO 8601 time; may be in the past.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="JSON object stored with the memory.")
    ] = None,
    user: UserOption = "default",
    session: SessionOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per request (--file).")] = 100,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Store CONTENT, or every item of --file (flags are defaults for items lacking them)."""
    if (content is None) == (file is None):
        raise typer.BadParameter("give exactly one of CONTENT and --file")
    defaults = _item_defaults(tier, created_at, metadata)
    scope = _given(user=user, session=session)

    def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {**scope, "items": [{**defaults, **item} for item in items]}
        data: list[dict[str, Any]] = client.call("POST", "/v1/memories", json=body)["data"]
        return data

    with _connected(url, key) as client:
        if file is None:
            for memory in send([{"content": content}]):
                typer.echo(memory["id"])
            return
        stored = _upload(
            "adding", file, lambda items: len(send(items)), batch_size=batch_size, strings=True
        )
    typer.echo(f"stored {stored} memories from {file.name} for user {user}")


def _item_defaults(
    tier: Tier | None, created_at: str | None, metadata: str | None
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"tier": tier.value} if tier else {}
    if created_at:
        defaults["created_at"] = created_at
    if metadata is not None:
        try:
            defaults["metadata"] = json.loads(metadata)
        except ValueError as error:
            raise typer.BadParameter(f"--metadata is not JSON: {error}") from None
        if not isinstance(defaults["metadata"], dict):
            raise typer.BadParameter("--metadata must be a JSON object")
    return defaults


@memories_app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to recall.")],
    key: KeyOption,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many results.")] = 8,
    tier: TierOption = None,
    user: UserOption = "default",
    session: SessionOption = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Recall the memories that best match QUERY (hybrid search, as chat injection does)."""
    body = _given(query=query, user=user, k=k, session=session, tier=tier)
    with _connected(url, key) as client:
        result = client.call("POST", "/v1/memories/search", json=body)
    if as_json:
        _echo_json(result)
        return
    table = _table(
        Column("score"),
        Column("created", no_wrap=True),
        caption=f"confidence {result['confidence']:.2f}",
    )
    for item in result["data"]:
        table.add_row(
            f"{item['score']:.3f}", _day(item["created_at"]), item["id"], _snippet(item["content"])
        )
    stdout.print(table)


class Pager:
    """Memories from ``GET /v1/memories``, following ``next_cursor`` up to ``limit``.

    ``more`` is true afterwards when the server had memories past the limit.
    """

    def __init__(
        self, client: MemoryClient, params: dict[str, Any], limit: int | None, page_size: int
    ) -> None:
        self._client, self._params = client, params
        self._limit, self._page_size = limit, page_size
        self.more = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        seen = 0
        left = self._limit if self._limit is not None else float("inf")
        while seen < left:
            size = int(min(self._page_size, left - seen))
            params = {**self._params, "limit": size, **({"cursor": cursor} if cursor else {})}
            page = self._client.call("GET", "/v1/memories", params=params)
            yield from page["data"]
            seen += len(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return
        self.more = True


@memories_app.command("list")
def list_memories(
    key: KeyOption,
    user: Annotated[str | None, typer.Option(help="Only this user (default: every user).")] = None,
    session: SessionOption = None,
    tier: TierOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most N memories.")] = 50,
    show_all: Annotated[bool, typer.Option("--all", help="Every memory, page by page.")] = False,
    page_size: Annotated[int, typer.Option(min=1, max=1000, help="Memories per request.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one memory a line.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Live memories, oldest first."""
    params = _given(user=user, session=session, tier=tier)
    # Date and tier share a column (two lines) so content keeps room beside a 32-char id.
    table = _table(Column("created", no_wrap=True), Column("user", max_width=16))
    with _connected(url, key) as client:
        pager = Pager(client, params, None if show_all else limit, page_size)
        for memory in pager:
            if as_json:
                _echo_json(memory)
            else:
                table.add_row(
                    f"{_day(memory['created_at'])}\n{memory['tier']}", _scope(memory),
                    memory["id"], _snippet(memory["content"], 80),
                )  # fmt: skip
    if not as_json:
        stdout.print(table)
    if pager.more:
        stderr.print(f"More memories past {limit}: use --all or a larger --limit.")


@memories_app.command()
def export(
    key: KeyOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JSONL file (default: stdout).")
    ] = None,
    include_vectors: Annotated[
        bool, typer.Option("--include-vectors", help="Add embeddings (skips re-embedding).")
    ] = False,
    user: Annotated[str | None, typer.Option(help="Only this user (default: every user).")] = None,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Stream the tenant's memories as JSONL, ready for `memories import`."""
    params = _given(user=user, include_vectors=include_vectors)
    # Without a file the export is stdout's data, so no bar; with one the server streams no
    # count, so the bar pulses while the record count climbs.
    progress, task = _progress(f"exporting to {output}", None, disable=output is None)
    with _connected(url, key) as client, progress:
        if output is None:
            count = _stream_export(
                client, params, typer.get_binary_stream("stdout"), progress, task
            )
            stderr.print(f"exported {count} memories")
            return
        # Written aside and renamed at the end: a failed export never leaves a truncated file
        # that looks complete.
        partial = output.with_name(output.name + ".part")
        try:
            with partial.open("wb") as sink:
                count = _stream_export(client, params, sink, progress, task)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"exported {count} memories to {output}")


def _stream_export(
    client: MemoryClient, params: dict[str, Any], sink: BinaryIO, progress: Progress, task: TaskID
) -> int:
    count = 0
    with client.stream("GET", "/v1/memories/export", params=params) as response:
        for block in response.iter_bytes():
            sink.write(block)
            count += block.count(b"\n")
            progress.update(task, records=count)
    progress.update(task, total=count, completed=count)  # the count is known only at the end
    return count


@memories_app.command("import")
def import_memories(
    file: Annotated[Path, typer.Argument(help="JSONL as `export` writes it.", **_EXISTING)],
    key: KeyOption,
    user: Annotated[
        str | None, typer.Option(help="User for records that name none (plain items).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per request.")] = 500,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Restore memories (ids kept; re-embedded when the model differs) into this key's tenant."""

    def send(records: list[dict[str, Any]]) -> int:
        lines = [json.dumps({"user": user, **r} if user else r) for r in records]
        body = "\n".join(lines).encode()
        headers = {"content-type": "application/x-ndjson"}
        answer = client.call("POST", "/v1/memories/import", content=body, headers=headers)
        return int(answer["imported"])

    with _connected(url, key) as client:
        imported = _upload("importing", file, send, batch_size=batch_size, strings=False)
    typer.echo(f"imported {imported} memories from {file.name}")


@memories_app.command()
def forget(
    key: KeyOption,
    user: Annotated[str | None, typer.Option(help="Forget every memory of this user.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session of --user.")] = None,
    memory_id: Annotated[str | None, typer.Option("--id", help="Forget one memory.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Forget one memory (--id), or a user's (or session's) memories; gone from search at once."""
    if memory_id is not None:
        if session is not None:
            raise typer.BadParameter("--session does not apply to --id")
        with _connected(url, key) as client:
            path = f"/v1/memories/{quote(memory_id, safe='')}"
            client.call("DELETE", path, params=_given(user=user))
        typer.echo(f"forgot {memory_id}")
        return
    if user is None:
        raise typer.BadParameter("give --user (optionally with --session) or --id")
    what = f"session {session!r} of user {user!r}" if session else f"user {user!r}"
    if not yes:
        typer.confirm(f"Forget every memory of {what}?", abort=True, err=True)
    with _connected(url, key) as client:
        answer = client.call("DELETE", "/v1/memories", params=_given(user=user, session=session))
    typer.echo(f"forgot {answer['deleted']} memories of {what}")
