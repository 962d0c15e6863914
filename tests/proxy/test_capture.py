"""Reading answers for capture, and the ledger that keeps resent history from being stored twice."""

from __future__ import annotations

import json

from memory.conversation import Turn, conversation_turns, query_embedding_text, recall_query
from memory.model import Scope
from proxy.capture import CaptureLedger
from proxy.shared_state import InProcessState
from proxy.wire import parse_chat_answer as parse_answer


def _sse(*events: dict[str, object]) -> list[bytes]:
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    # Split mid-event on purpose: upstream chunk boundaries fall anywhere.
    data = raw.encode()
    return [data[:37], data[37:101], data[101:]]


def test_streamed_text_and_tool_calls_are_accumulated() -> None:
    chunks = _sse(
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}}],
        },
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "check."}}]},
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "t",
                                "type": "function",
                                "function": {"name": "get_wea", "arguments": '{"ci'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "ther", "arguments": 'ty":"Porto"}'}}
                        ]
                    },
                }
            ],
        },
        {"id": "c", "choices": [], "usage": {"total_tokens": 9}},
    )
    answer = parse_answer(chunks, streamed=True)
    assert answer.text == 'Let me check.\ncalled get_weather({"city":"Porto"})'


def test_plain_answers_and_empty_choices() -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "Hi!", "tool_calls": None}}]}
    assert parse_answer([json.dumps(body).encode()], streamed=False).text == "Hi!"
    assert parse_answer([b'{"choices": []}'], streamed=False).text == ""


def test_system_prompts_and_tool_output_are_not_memories() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
        },
        {"role": "tool", "tool_call_id": "t", "content": "sunny"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    assert conversation_turns(messages) == [Turn("user", "Look"), Turn("assistant", "called f({})")]


async def test_ledger_claims_each_turn_once_and_gives_back_what_failed() -> None:
    ledger = CaptureLedger(InProcessState())
    scope = Scope(tenant="t", user="u")
    first = [Turn("user", "hello"), Turn("assistant", "hi"), Turn("user", "hello")]
    assert await ledger.claim(scope, first) == first[:2]
    second = [*first, Turn("user", "how are you")]
    assert await ledger.claim(scope, second) == [Turn("user", "how are you")]
    assert await ledger.claim(Scope(tenant="t", user="other"), first) == first[:2]
    await ledger.release(scope, [Turn("assistant", "hi")])
    assert await ledger.claim(scope, second) == [Turn("assistant", "hi")]


def test_recall_query_pulls_context_for_short_or_referring_turns() -> None:
    long_turn = "Which museums in Lisbon open late on Fridays for visitors?"
    assert recall_query([{"role": "user", "content": long_turn}]) == long_turn
    messages = [
        {"role": "user", "content": "I'm planning the Lisbon trip in May."},
        {"role": "assistant", "content": "Great, what do you need?"},
        {"role": "user", "content": "Book it."},
    ]
    query = recall_query(messages)
    assert "Lisbon" in query and query.endswith("Book it.")


def test_a_query_that_is_the_last_user_turn_is_embedded_as_capture_stores_that_turn() -> None:
    turn = "Which museums in Lisbon open late on Fridays for visitors?"
    messages = [{"role": "user", "content": [{"type": "text", "text": f"  {turn} "}]}]
    query = recall_query(messages)
    [captured] = conversation_turns(messages)
    assert query_embedding_text(messages, query) == captured.as_memory() == f"User: {turn}"
    short = [
        *messages,
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "Book it."},
    ]
    with_context = recall_query(short)
    assert query_embedding_text(short, with_context) == with_context  # not a stored turn
