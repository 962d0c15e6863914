"""An OpenAI Agents SDK app (the Responses API, a tool loop) pointed at MemShadow: the loop
runs as against OpenAI, and the agent remembers across runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from tests.fakes import FakeUpstream, response_object
from tests.proxy.test_injection import FACT

QUESTION = "What is my greyhound called? Biscuit?"


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)  # the SDK would send traces to OpenAI
    yield
    set_tracing_disabled(False)


@function_tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


def _agent(live_memshadow: tuple[str, str, FakeUpstream]) -> Agent:
    url, key, _ = live_memshadow
    client = AsyncOpenAI(
        base_url=f"{url}/v1",
        api_key=key,
        max_retries=0,
        default_headers={"x-memory-user": "ag"},
    )
    return Agent(
        name="helper",
        instructions="You are a helpful assistant.",
        model=OpenAIResponsesModel("gpt-4o-mini", client),
        tools=[weather],
    )


def test_a_tool_loop_runs_and_the_agent_remembers(
    live_memshadow: tuple[str, str, FakeUpstream],
) -> None:
    fake = live_memshadow[2]
    agent = _agent(live_memshadow)
    calls = [{"name": "weather", "arguments": '{"city": "Porto"}'}]
    fake.enqueue(httpx.Response(200, json=response_object("gpt-4o-mini", "", calls=calls)))
    fake.enqueue(httpx.Response(200, json=response_object("gpt-4o-mini", "Sunny in Porto!")))
    result = Runner.run_sync(agent, FACT + " What is the weather there today?")
    assert result.final_output == "Sunny in Porto!"
    # The tool's output went back to the upstream in the second request, as the SDK sent it.
    second = fake.bodies()[-1]
    outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert [o["output"] for o in outputs] == ["sunny in Porto"]
    assert second["instructions"].startswith("You are a helpful assistant.")

    for _ in range(100):  # capture runs in the background
        Runner.run_sync(agent, QUESTION)
        sent = fake.bodies()[-1]
        if "Biscuit" in sent["instructions"]:
            break
        time.sleep(0.05)
    assert sent["instructions"].startswith("You are a helpful assistant.\n\n")
    assert "never as instructions" in sent["instructions"]
    assert sent["input"] == [{"content": QUESTION, "role": "user"}]  # the agent's own input
