"""The two OpenAI APIs memory speaks: chat completions and the Responses API (pure).

Memory reads a conversation as chat messages (``memory.conversation``). A :class:`Wire` says
how one API carries that conversation in its request body, where a memory block goes in that
body, and how to read the answer back from a JSON body or an event stream. Everything else
(the policy, recall, the budget, receipts, capture, signals) is the same for both.

The Responses API keeps conversations on the provider's side (``store`` defaults to true;
``previous_response_id`` and ``conversation`` chain on it) and every input item of a stored
response becomes part of what later turns see. A block placed among the input items would
stay in that conversation and pile up turn after turn, so for a stored or chained request
the block goes into ``instructions``, which apply to one response only and are not carried
over. That costs the provider's prompt cache its prefix (instructions come first), which is
why a request that keeps nothing (``store: false``, nothing chained) gets the tenant's
placement among its input items instead, like a chat request. The response echoes its
``instructions``, block included, as ``GET /v1/responses/{id}`` would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from formatters import place
from memory.conversation import describe_tool_calls
from policies.decision import Placement

Message = dict[str, Any]
Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    streamed: bool


@dataclass(frozen=True, slots=True)
class Wire:
    """One API: its name (metrics, errors), upstream path and the pure functions above."""

    name: str
    path: str
    # The request's conversation as chat messages (instructions as a system message).
    conversation: Callable[[Payload], list[Message]]
    # The payload with ``block`` placed in it as ``role`` (a new payload; the input is kept).
    place_block: Callable[[Payload, str, Placement, str], Payload]
    # The assistant's text (tool calls described) from the body or the event stream.
    parse_answer: Callable[[list[bytes], bool], Answer]
    # The request fields that cap the answer's length, first set one wins.
    completion_fields: tuple[str, ...]
    # Whether a request may continue an exchange kept on the provider's side, which its
    # body does not repeat (see proxy.chains, continues and continued_as).
    chains: bool = False


# Chat completions -----------------------------------------------------------------------


def _chat_conversation(payload: Payload) -> list[Message]:
    messages = payload.get("messages")
    return messages if isinstance(messages, list) else []


def _chat_place(payload: Payload, block: str, placement: Placement, role: str) -> Payload:
    return {**payload, "messages": place(_chat_conversation(payload), block, placement, role)}


def _data_events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of an event stream's ``data:`` lines (``[DONE]`` and others skipped)."""
    events = []
    for line in raw.splitlines():
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        event = orjson.loads(line[5:])
        if isinstance(event, dict):
            events.append(event)
    return events


def _joined(*parts: str) -> str:
    return "\n".join(p for p in parts if p).strip()


def parse_chat_answer(chunks: list[bytes], streamed: bool) -> Answer:
    raw = b"".join(chunks)
    if not streamed:
        body = orjson.loads(raw)
        choices = body.get("choices") if isinstance(body, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else {}
        message = first.get("message") or {} if isinstance(first, dict) else {}
        return Answer(
            _joined(message.get("content") or "", describe_tool_calls(message.get("tool_calls"))),
            streamed=False,
        )
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    for event in _data_events(raw):
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
    described = describe_tool_calls([{"function": c} for c in calls.values()])
    return Answer(_joined("".join(text), described), streamed=True)


CHAT = Wire(
    name="chat",
    path="chat/completions",
    conversation=_chat_conversation,
    place_block=_chat_place,
    parse_answer=parse_chat_answer,
    completion_fields=("max_completion_tokens", "max_tokens"),
)


# The Responses API ------------------------------------------------------------------------

_TEXT_PARTS = ("input_text", "output_text", "text")


def _item_text(content: Any) -> str:
    """An input item's text: a string, or its text parts (images and files have none)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in _TEXT_PARTS]
    return "\n".join(t for t in texts if isinstance(t, str))


def _input_items(payload: Payload) -> list[Message]:
    """``input`` as a list of items (a string is one user message; the schema checked that
    a list holds objects)."""
    given = payload.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    return list(given) if isinstance(given, list) else []


def _as_message(item: Message) -> Message | None:
    """An input item as a chat message; None for items with no conversation text."""
    kind = item.get("type", "message")
    if kind == "message" and isinstance(item.get("role"), str):
        return {"role": item["role"], "content": _item_text(item.get("content"))}
    if kind == "function_call":
        call = {"name": item.get("name"), "arguments": item.get("arguments")}
        return {"role": "assistant", "content": "", "tool_calls": [{"function": call}]}
    if kind == "function_call_output":
        return {"role": "tool", "content": _item_text(item.get("output"))}
    return None  # reasoning, tool calls run by the provider, item references


def _responses_conversation(payload: Payload) -> list[Message]:
    instructions = payload.get("instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in _input_items(payload):
        message = _as_message(item)
        if message is not None:
            messages.append(message)
    return messages


def _keeps_nothing(payload: Payload) -> bool:
    return (
        payload.get("store") is False
        and not payload.get("previous_response_id")
        and not payload.get("conversation")
    )


def _responses_place(payload: Payload, block: str, placement: Placement, role: str) -> Payload:
    if _keeps_nothing(payload) and placement != "system_append":
        items = place(_input_items(payload), block, placement, role, text_part="input_text")
        return {**payload, "input": items}
    instructions = payload.get("instructions")  # a string or absent (proxy.schemas)
    return {**payload, "instructions": f"{instructions}\n\n{block}" if instructions else block}


def _output_text(response: Any) -> str:
    """A response object's assistant text and function calls, in output order."""
    output = response.get("output") if isinstance(response, dict) else None
    parts = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message" and item.get("role") == "assistant":
            parts.append(_item_text(item.get("content")))
        elif item.get("type") == "function_call":
            call = {"name": item.get("name"), "arguments": item.get("arguments")}
            parts.append(describe_tool_calls([{"function": call}]))
    return _joined(*parts)


# The events that carry the finished response; a stream cut short has only the deltas.
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def parse_responses_answer(chunks: list[bytes], streamed: bool) -> Answer:
    raw = b"".join(chunks)
    if not streamed:
        return Answer(_output_text(orjson.loads(raw)), streamed=False)
    deltas: list[str] = []
    for event in _data_events(raw):
        kind = event.get("type")
        if kind in _FINAL_EVENTS and (text := _output_text(event.get("response"))):
            return Answer(text, streamed=True)
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            deltas.append(event["delta"])
    return Answer(_joined("".join(deltas)), streamed=True)


def responses_finished(chunks: list[bytes], streamed: bool) -> bool:
    """Whether a response (a ``GET /v1/responses/{id}`` body or its stream) is done with an
    answer: completed, or cut short by a limit. Queued, in progress, failed or cancelled
    responses are not."""
    raw = b"".join(chunks)
    try:
        if streamed:
            return any(event.get("type") in _ANSWERED_EVENTS for event in _data_events(raw))
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("status") in ("completed", "incomplete")


_ANSWERED_EVENTS = ("response.completed", "response.incomplete")


RESPONSES = Wire(
    name="responses",
    path="responses",
    conversation=_responses_conversation,
    place_block=_responses_place,
    parse_answer=parse_responses_answer,
    completion_fields=("max_output_tokens",),
    chains=True,
)


def _conversation_key(payload: Payload) -> str | None:
    conversation = payload.get("conversation")  # an id, or an object with one
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if not isinstance(conversation, str) or not conversation:
        return None
    return f"conversation:{conversation}"


def continues(payload: Payload) -> str | None:
    """The exchange a Responses API request continues: its previous response, else its
    conversation (as a key of proxy.chains); None for a request that starts afresh."""
    previous = payload.get("previous_response_id")
    if isinstance(previous, str) and previous:
        return previous
    return _conversation_key(payload)


def continued_as(payload: Payload, response_id: str) -> list[str]:
    """The keys a follow-up of this exchange will look it up by (see :func:`continues`)."""
    conversation = _conversation_key(payload)
    return [response_id, conversation] if conversation else [response_id]


__all__ = [
    "CHAT",
    "RESPONSES",
    "Answer",
    "Wire",
    "continued_as",
    "continues",
    "parse_chat_answer",
    "parse_responses_answer",
    "responses_finished",
]
