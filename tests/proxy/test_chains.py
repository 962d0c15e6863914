"""The exchanges chained Responses API follow-ups continue: per tenant and user, bounded."""

from __future__ import annotations

from proxy.chains import ChainContext
from proxy.wire import continued_as, continues


def test_a_follow_up_finds_the_exchange_it_continues_and_nobody_elses() -> None:
    chains = ChainContext()
    chains.note("acme", "hal", ["resp_1", "conversation:c1"], "About Maya?", "Your sister.")
    expected = [
        {"role": "user", "content": "About Maya?"},
        {"role": "assistant", "content": "Your sister."},
    ]
    assert chains.before("acme", "hal", "resp_1") == expected
    assert chains.before("acme", "hal", "conversation:c1") == expected
    assert chains.before("acme", "ivo", "resp_1") == []  # another user
    assert chains.before("other", "hal", "resp_1") == []  # another tenant
    assert chains.before("acme", "hal", "resp_2") == []


def test_only_the_end_of_long_turns_is_kept_and_old_or_many_exchanges_are_forgotten() -> None:
    now = [0.0]
    chains = ChainContext(capacity=2, clock=lambda: now[0])
    chains.note("t", "u", ["r1"], "word " * 500 + "end", "")
    [kept] = chains.before("t", "u", "r1")  # an empty answer is no turn
    assert kept["content"].endswith("end") and len(kept["content"].split()) == 60
    chains.note("t", "u", ["r2"], "two", "2")
    chains.note("t", "u", ["r3"], "three", "3")
    assert chains.before("t", "u", "r1") == []  # the oldest of three, past capacity 2
    now[0] = 3601.0
    assert chains.before("t", "u", "r3") == []  # older than an hour


def test_what_a_request_continues_and_what_its_exchange_will_be_known_by() -> None:
    assert continues({"input": "Hi"}) is None
    assert continues({"previous_response_id": "resp_1", "conversation": "c1"}) == "resp_1"
    assert continues({"conversation": {"id": "c1"}}) == "conversation:c1"
    assert continued_as({"conversation": "c1"}, "resp_2") == ["resp_2", "conversation:c1"]
    assert continued_as({}, "resp_2") == ["resp_2"]
