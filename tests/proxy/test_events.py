"""Operator events on ``memshadow.events``: each carries a machine-readable ``event`` name.

Stored (API and capture), injection abstained and feedback received (explicit and implicit)
are driven here through the public HTTP surface; superseded and archived are covered where
they happen (tests/memory/test_supersession.py, tests/memory/test_pruner.py).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream, completion
from tests.proxy.test_feedback import _ask, _store
from tests.proxy.test_memories_api import eventually

pytestmark = pytest.mark.usefixtures("upstream")


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The ``extra`` fields of each ``name`` event logged so far."""
    records = (r.__dict__ for r in caplog.records if r.name == "memshadow.events")
    return [fields for fields in records if fields.get("event") == name]


async def test_events_for_stored_abstained_and_feedback(
    client: httpx.AsyncClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memshadow.events")
    [tea] = await _store(client, "ann", "Ann drinks green tea every morning.")
    [stored] = _events(caplog, "memory.stored")
    assert stored["source"] == "api" and stored["memory_ids"] == [tea] and stored["tenant"]

    off_topic = await _ask(client, upstream, "ann", "Quantum chromodynamics lattice gauge?", "c-0")
    assert off_topic.headers["x-memory-status"] == "abstained"
    [abstained] = _events(caplog, "injection.abstained")
    assert abstained["confidence"] < abstained["threshold"]

    on_topic = await _ask(client, upstream, "ann", "What tea does Ann drink?", "c-1")
    assert on_topic.headers["x-memory-status"] == "ok"
    await client.post("/v1/feedback", json={"completion_id": "c-1", "useful": False})
    [explicit] = _events(caplog, "feedback.received")
    assert (
        explicit["kind"] == "explicit"
        and explicit["memory_ids"] == [tea]
        and explicit["value"] == -1
    )


async def test_events_for_capture_and_implicit_feedback(
    client: httpx.AsyncClient, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memshadow.events")
    await _store(client, "bob", "Bob's sister Carla lives in Porto.")
    upstream.enqueue(
        httpx.Response(200, json={**completion("m", "Carla lives in Porto."), "id": "c-2"})
    )
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "Where does Carla live?"}]},
        headers={"x-memory-user": "bob", "x-memory-session": "s"},
    )
    assert response.headers["x-memory-status"] == "ok"

    async def captured() -> bool:
        return any(r["source"] == "capture" for r in _events(caplog, "memory.stored"))

    await eventually(captured)
    usage = [r for r in _events(caplog, "feedback.received") if r["kind"] == "usage"]
    assert usage and usage[0]["completion_id"] == "c-2" and usage[0]["value"] > 0
