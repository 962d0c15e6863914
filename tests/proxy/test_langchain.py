"""A LangChain app (``langchain-openai``) pointed at MemShadow: chat, streaming, tools,
errors and the Responses API behave as against OpenAI, and the app gains memory."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.fakes import FakeUpstream, completion, sse_response
from tests.proxy.test_injection import FACT

QUESTION = "What is my greyhound called? Biscuit?"


@pytest.fixture
def live(live_memshadow: tuple[str, str, FakeUpstream]) -> tuple[str, str, FakeUpstream]:
    url, key, fake = live_memshadow
    return f"{url}/v1", key, fake


def _model(live: tuple[str, str, FakeUpstream], **options: object) -> ChatOpenAI:
    url, key, _ = live
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=url,
        api_key=key,
        max_retries=0,
        default_headers={"x-memory-user": "lc"},
        **options,
    )


def _memory_in(body: dict[str, object]) -> str:
    if "instructions" in body:
        return str(body["instructions"])
    messages = body.get("messages") or body.get("input") or []
    assert isinstance(messages, list)
    return "\n".join(str(m.get("content")) for m in messages if m.get("role") != "user")


def _asks_until_remembered(model: ChatOpenAI, fake: FakeUpstream) -> None:
    """Capture runs in the background: ask until the answer's request carried the fact."""
    for _ in range(100):
        model.invoke([HumanMessage(QUESTION)])
        if "Biscuit" in _memory_in(fake.bodies()[-1]):
            return
        time.sleep(0.05)
    raise AssertionError("the fact was never injected")


def test_chat_streaming_and_memory(live: tuple[str, str, FakeUpstream]) -> None:
    fake = live[2]
    model = _model(live)
    answer = model.invoke([HumanMessage(FACT)])
    assert isinstance(answer, AIMessage) and answer.content == "Hello there"
    fake.enqueue(sse_response("gpt-4o-mini", ["Con", "grats!"]))
    chunks = list(model.stream([HumanMessage("Thanks!")]))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "Congrats!"
    _asks_until_remembered(model, fake)
    assert fake.bodies()[-1]["messages"][-1] == {"role": "user", "content": QUESTION}


def test_tool_calls_come_back_as_langchain_tool_calls(
    live: tuple[str, str, FakeUpstream],
) -> None:
    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    fake = live[2]
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Porto"}'}}  # fmt: skip
    fake.enqueue(httpx.Response(200, json=completion("gpt-4o-mini", None, tool_calls=[call])))
    answer = _model(live).bind_tools([weather]).invoke([HumanMessage("Weather in Porto?")])
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls == [
        {"name": "weather", "args": {"city": "Porto"}, "id": "call_1", "type": "tool_call"}
    ]
    assert fake.bodies()[-1]["tools"][0]["function"]["name"] == "weather"


def test_errors_are_the_openai_exceptions_langchain_raises(
    live: tuple[str, str, FakeUpstream],
) -> None:
    fake = live[2]
    fake.enqueue(httpx.Response(429, json={"error": {"message": "slow down",
                 "type": "rate_limit_error", "param": None, "code": None}}))  # fmt: skip
    with pytest.raises(openai.RateLimitError, match="slow down"):
        _model(live).invoke([HumanMessage("Hi")])
    url, _, _ = live
    bad_key = ChatOpenAI(model="m", base_url=url, api_key="msk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.invoke([HumanMessage("Hi")])


def test_the_responses_api_through_langchain_remembers_too(
    live: tuple[str, str, FakeUpstream],
) -> None:
    fake = live[2]
    model = _model(live, use_responses_api=True)
    answer = model.invoke([HumanMessage(FACT)])
    assert answer.text == "Hello there"
    assert fake.requests[-1].url.path.endswith("/responses")
    _asks_until_remembered(model, fake)
