"""Reading and writing the two APIs' bodies: the conversation, the block's place, the answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memory.conversation import conversation_turns, recall_query
from proxy.wire import CHAT, RESPONSES, responses_finished
from tests.fakes import response_object, responses_sse

ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "I live in Porto."},
    {"type": "message", "role": "assistant",
     "content": [{"type": "output_text", "text": "Nice city!", "annotations": []}]},
    {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Porto"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "message", "role": "user",
     "content": [{"type": "input_text", "text": "Is it warm"},
                 {"type": "input_image", "image_url": "https://x/y.png"},
                 {"type": "input_text", "text": "there today?"}]},
]  # fmt: skip


def test_the_responses_conversation_reads_like_chat() -> None:
    payload = {"model": "m", "instructions": "Be brief.", "input": ITEMS}
    messages = RESPONSES.conversation(payload)
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "assistant",
        "tool",
        "user",
    ]
    assert messages[-1]["content"] == "Is it warm\nthere today?"
    turns = conversation_turns(messages)
    assert [t.as_memory() for t in turns] == [
        "User: I live in Porto.",
        "Assistant: Nice city!",
        'Assistant: called weather({"city":"Porto"})',
        "User: Is it warm\nthere today?",
    ]
    assert recall_query(messages) == "Is it warm\nthere today?"
    assert RESPONSES.conversation({"model": "m", "input": "Hi"}) == [
        {"role": "user", "content": "Hi"}
    ]
    assert RESPONSES.conversation({"model": "m"}) == []


@pytest.mark.parametrize(
    "kept",
    [{}, {"store": True}, {"store": False, "previous_response_id": "resp_0"},
     {"store": False, "conversation": "conv_1"}],
)  # fmt: skip
def test_a_stored_or_chained_response_gets_the_block_in_its_instructions(
    kept: dict[str, Any],
) -> None:
    payload = {"model": "m", "input": ITEMS, "instructions": "Be brief.", **kept}
    placed = RESPONSES.place_block(payload, "BLOCK", "before_last_user", "system")
    assert placed["instructions"] == "Be brief.\n\nBLOCK"
    assert placed["input"] == ITEMS
    assert payload["instructions"] == "Be brief."  # the caller's payload is not changed
    bare = RESPONSES.place_block({"model": "m", "input": "Hi", **kept}, "B", "user_prefix", "x")
    assert bare["instructions"] == "B" and bare["input"] == "Hi"


def test_a_response_that_keeps_nothing_gets_the_tenants_placement_among_its_items() -> None:
    payload = {"model": "m", "input": ITEMS, "store": False}
    before = RESPONSES.place_block(payload, "BLOCK", "before_last_user", "developer")
    assert before["input"] == [*ITEMS[:-1], {"role": "developer", "content": "BLOCK"}, ITEMS[-1]]
    assert "instructions" not in before
    prefixed = RESPONSES.place_block(payload, "BLOCK", "user_prefix", "developer")
    assert prefixed["input"][-1]["content"][0] == {"type": "input_text", "text": "BLOCK"}
    appended = RESPONSES.place_block(payload, "BLOCK", "system_append", "developer")
    assert appended["instructions"] == "BLOCK" and appended["input"] == ITEMS
    text = RESPONSES.place_block({**payload, "input": "Hi"}, "BLOCK", "before_last_user", "system")
    assert text["input"] == [
        {"role": "system", "content": "BLOCK"},
        {"role": "user", "content": "Hi"},
    ]


def test_a_responses_answer_is_read_from_its_body_or_its_stream() -> None:
    calls = [{"name": "book", "arguments": '{"day":"fri"}'}]
    body = json.dumps(response_object("m", "Booked.", calls=calls)).encode()
    assert RESPONSES.parse_answer([body], False).text == 'Booked.\ncalled book({"day":"fri"})'
    streamed = responses_sse("m", ["Hel", "lo"]).content
    # Split anywhere: the stream is read once it is complete.
    assert RESPONSES.parse_answer([streamed[:37], streamed[37:]], True).text == "Hello"
    # Cut short before the final event, the deltas are what was said.
    cut = streamed[: streamed.index(b"event: response.completed")]
    assert RESPONSES.parse_answer([cut], True).text == "Hello"
    assert RESPONSES.parse_answer([b'{"id": "resp_1", "output": []}'], False).text == ""


def test_a_polled_response_is_finished_once_it_holds_its_answer() -> None:
    done = response_object("m", "Done.")
    assert responses_finished([json.dumps(done).encode()], False)
    for status in ("queued", "in_progress", "failed", "cancelled"):
        assert not responses_finished([json.dumps({**done, "status": status}).encode()], False)
    assert not responses_finished([b"not json"], False)
    streamed = responses_sse("m", ["Hel", "lo"]).content
    assert responses_finished([streamed[:40], streamed[40:]], True)
    assert not responses_finished([streamed[: streamed.index(b"event: response.completed")]], True)


def test_chat_places_the_block_in_its_messages() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    placed = CHAT.place_block(payload, "B", "before_last_user", "system")
    assert placed["messages"] == [
        {"role": "system", "content": "B"},
        {"role": "user", "content": "Hi"},
    ]
    assert CHAT.conversation(payload) == payload["messages"]
