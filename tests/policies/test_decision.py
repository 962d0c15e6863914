"""Scope, mode and tenant policy decisions."""

from __future__ import annotations

import pytest

from policies.decision import MemoryPolicy, PolicyInputError, decide, tenant_policy

BASE = MemoryPolicy()


def test_scope_precedence_header_then_body_then_default() -> None:
    assert decide({"x-memory-user": "alice"}, "bob", BASE).user == "alice"
    assert decide({}, "bob", BASE).user == "bob"
    assert decide({}, None, BASE).user == "default"
    assert decide({"x-memory-user": "  "}, " ", BASE).user == "default"
    assert decide({"x-memory-session": "s1"}, None, BASE).session == "s1"
    assert decide({}, None, BASE).session is None


@pytest.mark.parametrize(
    ("mode", "inject", "capture"),
    [("on", True, True), ("read", True, False), ("write", False, True), ("OFF", False, False)],
)
def test_modes(mode: str, inject: bool, capture: bool) -> None:
    decision = decide({"x-memory-mode": mode}, None, BASE)
    assert (decision.inject, decision.capture) == (inject, capture)


def test_tenant_default_mode_applies_without_a_header() -> None:
    policy = tenant_policy(BASE, {"mode": "write"})
    assert decide({}, None, policy).mode == "write"
    assert decide({"x-memory-mode": "on"}, None, policy).mode == "on"


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"x-memory-mode": "sometimes"}, "X-Memory-Mode"),
        ({"x-memory-user": "a" * 300}, "X-Memory-User"),
        ({"x-memory-session": "bad\x00session"}, "X-Memory-Session"),
    ],
)
def test_bad_values_name_their_field(headers: dict[str, str], field: str) -> None:
    with pytest.raises(PolicyInputError) as caught:
        decide(headers, None, BASE)
    assert caught.value.field == field


def test_bad_tenant_policy_is_refused() -> None:
    with pytest.raises(PolicyInputError, match=r"policy\.budget_fraction"):
        tenant_policy(BASE, {"budget_fraction": 3})
    with pytest.raises(PolicyInputError, match=r"policy\.no_such_knob"):
        tenant_policy(BASE, {"no_such_knob": 1})
