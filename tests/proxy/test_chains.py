"""The exchanges chained Responses API follow-ups continue: per tenant and user, shared."""

from __future__ import annotations

import asyncio

from proxy.chains import ChainContext
from proxy.shared_state import InProcessState
from proxy.wire import continued_as, continues


async def test_a_follow_up_finds_the_exchange_it_continues_and_nobody_elses() -> None:
    shared = InProcessState()
    noted = ChainContext(shared)
    await noted.note("acme", "hal", ["resp_1", "conversation:c1"], "About Maya?", "Your sister.")
    expected = [
        {"role": "user", "content": "About Maya?"},
        {"role": "assistant", "content": "Your sister."},
    ]
    chains = ChainContext(shared)  # another replica's, over the same shared state
    assert await chains.before("acme", "hal", "resp_1") == expected
    assert await chains.before("acme", "hal", "conversation:c1") == expected
    assert await chains.before("acme", "ivo", "resp_1") == []  # another user
    assert await chains.before("other", "hal", "resp_1") == []  # another tenant
    assert await chains.before("acme", "hal", "resp_2") == []


async def test_only_the_end_of_long_turns_is_kept_and_old_exchanges_are_forgotten() -> None:
    chains = ChainContext(InProcessState(), ttl_s=0.05)
    await chains.note("t", "u", ["r1"], "word " * 500 + "end", "")
    [kept] = await chains.before("t", "u", "r1")  # an empty answer is no turn
    assert kept["content"].endswith("end") and len(kept["content"].split()) == 60
    await chains.note("t", "u", ["conversation:c"], "one", "1")
    await chains.note("t", "u", ["conversation:c"], "two", "2")  # the conversation moved on
    assert (await chains.before("t", "u", "conversation:c"))[0]["content"] == "two"
    await asyncio.sleep(0.1)
    assert await chains.before("t", "u", "conversation:c") == []  # past its TTL


def test_what_a_request_continues_and_what_its_exchange_will_be_known_by() -> None:
    assert continues({"input": "Hi"}) is None
    assert continues({"previous_response_id": "resp_1", "conversation": "c1"}) == "resp_1"
    assert continues({"conversation": {"id": "c1"}}) == "conversation:c1"
    assert continued_as({"conversation": "c1"}, "resp_2") == ["resp_2", "conversation:c1"]
    assert continued_as({}, "resp_2") == ["resp_2"]
