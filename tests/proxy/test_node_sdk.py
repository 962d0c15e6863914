"""The official openai-node SDK (``tests/node``, installed by ``make test``) against MemShadow:
chat, streaming, tools, the Responses API, typed errors, and memory, in a real Node process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.fakes import FakeUpstream, completion, response_object, responses_sse, sse_response

NODE_DIR = Path(__file__).parents[1] / "node"


def test_an_openai_node_app_works_unchanged_and_remembers(
    live_memshadow: tuple[str, str, FakeUpstream],
) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for this test (the machine image has it)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make test` (it runs npm ci)"
    url, key, fake = live_memshadow
    # The upstream's answers, in the order the script asks.
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Porto"}'}}  # fmt: skip
    for answer in (
        httpx.Response(200, json=completion("gpt-4o-mini", "Hello there")),
        sse_response("gpt-4o-mini", ["Con", "grats!"]),
        httpx.Response(200, json=completion("gpt-4o-mini", None, tool_calls=[call])),
        httpx.Response(200, json=response_object("gpt-4o-mini", "Hi there")),
        responses_sse("gpt-4o-mini", ["Hi", " there"]),
        httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit_error",
                                            "param": None, "code": None}}),
    ):  # fmt: skip
        fake.enqueue(answer)
    environment = {**os.environ, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": key}
    ran = subprocess.run(
        [node, "sdk_check.mjs"],
        cwd=NODE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["chat"] == "Hello there"
    assert seen["streamed"] == "Congrats!"
    assert seen["tool_call"] == {"name": "weather", "arguments": '{"city":"Porto"}'}
    assert seen["response"] == "Hi there"
    assert seen["events"] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert seen["rate_limited"] == {"typed": True, "message": "429 slow down"}
    assert seen["bad_key"] == {"typed": True, "status": 401}
    assert seen["memory_status"] == "ok"
    assert "Biscuit" in json.dumps(fake.bodies()[-1]["messages"][:-1])
