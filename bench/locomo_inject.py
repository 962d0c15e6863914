"""LoCoMo injected-evidence recall: which evidence turns reach the upstream through chat.

Prints figures; it is a benchmark, never a test. Same data and write path as
:mod:`bench.locomo_recall`; then every question of categories 1-4 is sent as the user message
of ``POST /v1/chat/completions`` (``X-Memory-User`` = the conversation's user,
``X-Memory-Mode: read`` so that the questions themselves are not captured as memories and
cannot leak into later questions). The upstream is a recording fake OpenAI server on loopback
(``tests.fakes.FakeUpstream`` under uvicorn), so the proxy's real upstream client is used.

    .venv/bin/python -m bench.locomo_inject                    # real MiniLM, about a minute
    .venv/bin/python -m bench.locomo_inject --embedder fake    # smoke run

Per question: the receipt (``GET /v1/receipts/{completion_id}``) names the injected memory
ids, mapped back to turns; injected-evidence recall is the fraction of the question's evidence
turns among them. As a cross-check, each such turn's text must also be found in the messages
the upstream received (a mismatch is counted and printed). Tokens are ``X-Memory-Tokens``
(the whole rendered block, preamble included). Goal (issue 4): ≥ 0.80 of the evidence reaches
the upstream at ≤ 1,000 injected tokens on average.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

from bench.locomo_recall import (
    DEFAULT_DATA,
    REPO,
    Question,
    Stored,
    Tally,
    checked,
    ingest,
    load,
    load_embedder,
    print_table,
    recall,
    serve,
)  # fmt: skip

MODEL = "gpt-4o-mini"  # a model LiteLLM knows, so the budget reads a real context window


def one_line(text: str) -> str:
    return " ".join(text.split())


def upstream_text(body: dict[str, Any]) -> str:
    """Everything the upstream received in its messages, flattened like the notes are."""
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return one_line(" ".join(parts))


def next_answer(upstream: Any) -> str:
    """Queue a completion with a fresh id, so each question has its own receipt."""
    from tests.fakes import completion

    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    upstream.enqueue(httpx.Response(200, json={**completion(MODEL, "ok"), "id": completion_id}))
    return completion_id


async def ask(
    client: httpx.AsyncClient, upstream: Any, stored: Stored, question: Question,
    tally: Tally, statuses: Counter[str], mismatches: list[str],
) -> None:  # fmt: skip
    completion_id = next_answer(upstream)
    seen = len(upstream.requests)
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question.text}]},
        headers={"x-memory-user": stored.user, "x-memory-mode": "read"},
    )
    checked(response)
    status = response.headers.get("x-memory-status", "?")
    statuses[status] += 1
    injected: set[str] = set()
    if status == "ok":
        receipt = checked(await client.get(f"/v1/receipts/{completion_id}"))
        for memory in receipt["memories"]:
            injected |= stored.dia_ids(memory["id"])
    received = upstream_text(upstream.bodies()[seen])
    for dia_id in injected & question.evidence:
        if one_line(stored.content[dia_id]) not in received:
            mismatches.append(dia_id)  # truncated or not rendered: the receipt overstates
    tally.add("inj", question.category, recall(injected, question.evidence))
    tally.add("tokens", question.category, float(response.headers.get("x-memory-tokens", 0)))
    tally.add("notes", question.category, float(response.headers.get("x-memory-injected", 0)))


async def run(args: argparse.Namespace) -> None:
    from tests.conftest import LoopbackServer
    from tests.fakes import FakeUpstream

    conversations = load(args.data)[: args.limit or None]
    started = time.perf_counter()
    embedder = load_embedder(args.embedder)
    upstream = FakeUpstream()
    tally, statuses, mismatches = Tally(), Counter[str](), list[str]()
    with LoopbackServer(upstream.asgi()) as server:
        async with serve(embedder, upstream_url=f"{server.url}/v1") as client:
            for conversation in conversations:
                stored = await ingest(client, conversation)
                print(f"{conversation.sample_id}: {len(conversation.turns)} turns stored, "
                      f"{len(conversation.questions)} questions")  # fmt: skip
                for question in conversation.questions:
                    await ask(client, upstream, stored, question, tally, statuses, mismatches)
    print_table(
        f"LoCoMo injected-evidence recall, POST /v1/chat/completions ({args.embedder} embedder)",
        tally,
        [("injected", "inj", "%"), ("tokens", "tokens", ".0f"), ("notes", "notes", ".1f")],
    )
    total = sum(statuses.values())
    print(
        "\nX-Memory-Status: "
        + ", ".join(f"{s} {n} ({100 * n / total:.1f}%)" for s, n in statuses.most_common())
    )
    print(f"evidence named by a receipt but not found verbatim upstream: {len(mismatches)}")
    print(f"wall time {time.perf_counter() - started:.1f} s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--embedder", choices=["real", "fake"], default="real")
    parser.add_argument("--data", type=type(DEFAULT_DATA), default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    asyncio.run(run(parse_args()))
