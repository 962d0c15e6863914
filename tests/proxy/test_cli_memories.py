"""``memshadow memories …`` against a live loopback MemShadow (the commands are HTTP clients)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from config import Settings
from proxy.cli import app
from proxy.keys import TenantRegistry
from tests.conftest import LoopbackServer, build_app, free_port


@dataclass
class Live:
    url: str
    key: str
    registry: TenantRegistry

    def run(self, *args: str, key: str | None = None, url: str | None = None, **kw: Any) -> Result:
        options = ["--url", url or self.url, "--key", key or self.key]
        return CliRunner().invoke(app, ["memories", *args, *options], **kw)

    def ok(self, *args: str, **kw: Any) -> Result:
        result = self.run(*args, **kw)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def listed(self, *args: str, **kw: Any) -> list[dict[str, Any]]:
        out = self.ok("list", "--all", "--json", *args, **kw).stdout
        return [json.loads(line) for line in out.splitlines()]

    def found(self, query: str, needle: str, *args: str, seconds: float = 10.0) -> dict[str, Any]:
        """Stored memories become searchable within a few seconds: poll for the needle."""
        deadline = time.monotonic() + seconds
        while True:
            body: dict[str, Any] = json.loads(self.ok("search", query, "--json", *args).stdout)
            hits = [item for item in body["data"] if needle in item["content"]]
            if hits:
                return hits[0]
            assert time.monotonic() < deadline, f"{needle!r} not found: {body}"
            time.sleep(0.05)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    settings = Settings(
        upstream_base_url="http://127.0.0.1:9/v1",  # memory routes never call the upstream
        upstream_api_key="sk-upstream",
        data_dir=tmp_path / "data",
    )
    registry = TenantRegistry(str(settings.data_dir / "registry"))
    key, _ = registry.create_key("acme")
    with LoopbackServer(build_app(settings, registry=registry)) as server:
        yield Live(server.url, key, registry)


def test_add_then_search(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    added = live.ok(
        "add", "Alice moved to Porto in March.", "--user", "alice", "--tier", "semantic",
        "--created-at", "2023-03-02T10:00:00Z", "--metadata", '{"via": "cli"}',
    )  # fmt: skip
    memory_id = added.stdout.strip()
    hit = live.found("where does alice live Porto", "Porto", "--user", "alice")
    assert hit["id"] == memory_id
    assert hit["created_at"].startswith("2023-03-02") and hit["metadata"]["via"] == "cli"
    assert live.listed("--user", "alice")[0]["tier"] == "semantic"

    # Another user sees nothing; the table names score, date and content; env vars work.
    assert json.loads(live.ok("search", "Porto", "--json").stdout)["data"] == []
    monkeypatch.setenv("MEMSHADOW_URL", live.url + "/v1")  # an OPENAI_BASE_URL-style value
    monkeypatch.setenv("MEMSHADOW_KEY", live.key)
    table = CliRunner().invoke(app, ["memories", "search", "Porto", "--user", "alice"])
    assert table.exit_code == 0, table.stderr
    assert "Porto" in table.stdout and "2023-03-02" in table.stdout
    assert "confidence" in table.stdout


def test_bulk_add_from_a_file_and_list_pages(live: Live, tmp_path: Path) -> None:
    lines = [json.dumps(f"Gardening fact number {i}.") for i in range(4)]
    lines += [json.dumps({"content": f"Tomato fact {i}.", "tier": "episodic"}) for i in range(3)]
    source = tmp_path / "facts.jsonl"
    source.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")

    added = live.ok("add", "--file", str(source), "--user", "carol", "--batch-size", "3")
    assert "stored 7 memories" in added.stdout

    every = live.listed("--user", "carol", "--page-size", "3")
    assert len(every) == 7 and len({m["id"] for m in every}) == 7
    assert sorted(m["tier"] for m in every).count("episodic") == 3
    assert len(live.listed("--user", "carol", "--tier", "episodic", "--page-size", "2")) == 3

    capped = live.ok("list", "--user", "carol", "--limit", "5", "--page-size", "2", "--json")
    assert len(capped.stdout.splitlines()) == 5 and "--all" in capped.stderr
    table = live.ok("list", "--user", "carol", terminal_width=200)
    assert "Tomato fact 2." in table.stdout and every[0]["id"] in table.stdout


def test_export_then_import_into_another_tenant(live: Live, tmp_path: Path) -> None:
    live.ok("add", "Gina speaks Portuguese.", "--user", "gina", "--session", "s1")
    live.ok("add", "Hugo climbs on Sundays.", "--user", "hugo")
    live.ok("add", "Hugo is allergic to peanuts.", "--user", "hugo", "--tier", "semantic")
    dump = tmp_path / "acme.jsonl"
    exported = live.ok("export", "--output", str(dump), "--include-vectors")
    assert "exported 3 memories" in exported.stdout
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(records) == 3 and all(r["vector"] for r in records)
    assert not dump.with_name("acme.jsonl.part").exists()
    to_stdout = live.ok("export", "--user", "hugo")
    assert len(to_stdout.stdout.splitlines()) == 2

    other, _ = live.registry.create_key("globex")
    assert live.listed(key=other) == []
    imported = live.ok("import", str(dump), "--batch-size", "2", key=other)
    assert "imported 3 memories" in imported.stdout

    def essence(memories: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        keys = ("id", "user", "session", "tier", "content", "created_at")
        return {tuple(m[k] for k in keys) for m in memories}

    assert essence(live.listed(key=other)) == essence(live.listed())
    hit = live.found("peanuts allergy", "peanuts", "--user", "hugo", "--key", other)
    assert hit["id"] == next(r["id"] for r in records if "peanuts" in r["content"])


def test_import_plain_items_with_a_default_user(live: Live, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"content": "Ivy keeps bees."}) + "\n")
    missing = live.run("import", str(items))
    assert missing.exit_code == 1 and "user" in missing.stderr and "items.jsonl" in missing.stderr
    live.ok("import", str(items), "--user", "ivy")
    assert [m["content"] for m in live.listed("--user", "ivy")] == ["Ivy keeps bees."]


def test_forget(live: Live) -> None:
    live.ok("add", "Erin plays the cello.", "--user", "erin", "--session", "s1")
    live.ok("add", "Erin plays the oboe.", "--user", "erin", "--session", "s2")
    live.ok("add", "Erin plays the harp.", "--user", "erin")
    kept = live.ok("add", "Frank plays the cello.", "--user", "frank").stdout.strip()

    session = live.ok("forget", "--user", "erin", "--session", "s1", "--yes")
    assert "forgot 1 memories" in session.stdout
    declined = live.run("forget", "--user", "erin", input="n\n")
    assert declined.exit_code == 1 and len(live.listed("--user", "erin")) == 2
    confirmed = live.ok("forget", "--user", "erin", input="y\n")
    assert "forgot 2 memories" in confirmed.stdout
    assert live.listed("--user", "erin") == []
    assert json.loads(live.ok("search", "cello", "--user", "erin", "--json").stdout)["data"] == []

    assert live.ok("forget", "--id", kept).stdout.strip() == f"forgot {kept}"
    assert live.listed() == []
    again = live.run("forget", "--id", kept)
    assert again.exit_code == 1 and "No memory with id" in again.stderr

    neither = live.run("forget")
    assert neither.exit_code == 2 and "--user" in neither.stderr


def test_server_errors_are_one_red_line_and_exit_1(live: Live, tmp_path: Path) -> None:
    empty = live.run("add", "   ")
    assert empty.exit_code == 1 and empty.stdout == ""
    assert empty.stderr.count("\n") == 1
    assert "error:" in empty.stderr and "must not be empty" in empty.stderr
    assert "param content" in empty.stderr and "HTTP 400" in empty.stderr

    bad_key = live.run("list", key="msk-not-a-key")
    assert bad_key.exit_code == 1 and "HTTP 401" in bad_key.stderr

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"content": "fine"}\nnot json\n')
    parsed = live.run("add", "--file", str(broken))
    assert parsed.exit_code == 1 and "broken.jsonl line 2 is not JSON" in parsed.stderr

    bad_metadata = live.run("add", "x", "--metadata", "[1]")
    assert bad_metadata.exit_code == 2 and "JSON object" in bad_metadata.stderr


def test_unreachable_server_names_the_url(live: Live) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = live.run("search", "anything", url=nowhere)
    assert result.exit_code == 1
    assert f"cannot connect to MemShadow at {nowhere}" in result.stderr
    assert "MEMSHADOW_URL" in result.stderr
