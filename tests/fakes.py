"""Small deterministic collaborators for tests where the real thing is not the point."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import numpy as np

from memory.embedder import Vectors

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """Hashing-trick bag of words: texts sharing words get similar vectors.

    Deterministic across processes (blake2b, not ``hash()``), fast, and good enough for
    tests that need "related text ranks higher" without loading a model.
    """

    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension
        self.calls = 0

    @property
    def model_id(self) -> str:
        return f"fake-bow-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                # Two signed buckets per word: with one, two words colliding in 64 buckets
                # (likely among 40 numbers) made different texts identical vectors.
                digest = hashlib.blake2b(word.encode(), digest_size=10).digest()
                for part in (digest[:5], digest[5:]):
                    bucket = int.from_bytes(part[:4], "little") % self._dimension
                    out[row, bucket] += 1.0 if part[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


async def answered_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Handle the lifespan protocol for a bare test ASGI app; True if that is what it was."""
    if scope["type"] != "lifespan":
        return False
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
    return True


Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeUpstream:
    """A scripted OpenAI-compatible upstream that records what it received.

    Queue answers with :meth:`enqueue` (or rely on the default completion). Usable as a respx
    side effect (``handle``) and, through :meth:`asgi`, as a real server on loopback.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._queue: list[Answer] = []

    def enqueue(self, answer: Answer) -> None:
        """Queue the next answer; an exception is raised as a transport failure would be,
        a function answers from the request it is given."""
        self._queue.append(answer)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._queue:
            answer = self._queue.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer if isinstance(answer, httpx.Response) else answer(request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=models_listing())
        body = json.loads(request.content)
        if request.url.path.endswith("/responses"):
            if body.get("stream"):
                return responses_sse(body["model"], ["Hello", " there"])
            return httpx.Response(200, json=response_object(body["model"], "Hello there"))
        if body.get("stream"):
            return sse_response(body["model"], ["Hello", " there"])
        return httpx.Response(200, json=completion(body["model"], "Hello there"))

    def asgi(self) -> Callable[..., Awaitable[None]]:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if await answered_lifespan(scope, receive, send):
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
            request = httpx.Request(
                scope["method"], f"http://upstream{scope['path']}", headers=headers, content=body
            )
            response = self.handle(request)
            raw_headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": response.content})

        return app


def completion(model: str, content: str, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def sse_response(model: str, pieces: Sequence[str]) -> httpx.Response:
    events = []
    for piece in pieces:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return httpx.Response(
        200, content="".join(events).encode(), headers={"content-type": "text/event-stream"}
    )


def response_object(
    model: str, text: str, *, id: str = "resp_fake", calls: Sequence[dict[str, str]] = ()
) -> dict[str, Any]:
    """A Responses API response: one assistant message, then any function calls."""
    output: list[dict[str, Any]] = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        },
    ]
    output += [
        {
            "type": "function_call",
            "id": f"fc_{i}",
            "call_id": f"call_{i}",
            "status": "completed",
            **call,
        }
        for i, call in enumerate(calls)
    ]
    return {
        "id": id,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def responses_sse(model: str, pieces: Sequence[str], *, id: str = "resp_fake") -> httpx.Response:
    """A streamed Responses API answer: created, the text deltas, completed."""
    final = response_object(model, "".join(pieces), id=id)
    started = {**final, "status": "in_progress", "output": []}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": started}]
    events += [
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "delta": piece,
            "logprobs": [],
        }
        for piece in pieces
    ]
    events.append({"type": "response.completed", "response": final})
    body = "".join(
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n"
        for n, e in enumerate(events)
    )
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def models_listing() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}],
    }
