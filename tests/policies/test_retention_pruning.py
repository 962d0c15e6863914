"""decide_retention: pure pruning decisions over memory summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policies.retention import (
    DEFAULT_RETENTION,
    RetentionItem,
    RetentionPolicy,
    TierRetention,
    activation,
    decide_retention,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def _item(id_: str, tier: str, days: float, mean: float = 0.5, useful: float = 0.0,
          user: str = "u") -> RetentionItem:  # fmt: skip
    return RetentionItem(id_, user, tier, NOW - timedelta(days=days), mean, useful)


def _kinds(
    items: list[RetentionItem], policy: RetentionPolicy = DEFAULT_RETENTION
) -> dict[str, str]:
    return {a.id: f"{a.kind}:{a.reason}" for a in decide_retention(items, NOW, policy)}


def test_activation_is_decay_times_usefulness() -> None:
    fresh = _item("a", "episodic", 0, mean=0.8)
    assert activation(fresh, NOW, DEFAULT_RETENTION) == 0.8
    aged = _item("b", "episodic", 14, mean=0.5)
    assert activation(aged, NOW, DEFAULT_RETENTION) == 0.5 * (0.1 + 0.9 * 0.5)


def test_long_term_is_never_touched() -> None:
    items = [_item("lt", "long_term", 10_000, mean=0.01),
             _item("lt2", "long_term", 1, mean=0.99, useful=50)]  # fmt: skip
    capped = RetentionPolicy(tiers={"long_term": TierRetention(half_life_s=1.0, cap=0)})
    assert _kinds(items) == {}
    assert _kinds(items, capped) == {}


def test_decay_alone_archives_working_but_not_episodic_or_semantic() -> None:
    items = [_item("w", "working", 2), _item("w_new", "working", 0.1),
             _item("e", "episodic", 5_000), _item("s", "semantic", 5_000)]  # fmt: skip
    assert _kinds(items) == {"w": "archive:floor"}


def test_failing_memories_sink_then_go() -> None:
    failing = 2.0 / 7.0  # Beta(2, 2) prior after three "not useful"
    items = [
        _item("young", "episodic", 3, mean=failing),
        _item("old", "episodic", 90, mean=failing),
        _item("sem", "semantic", 90, mean=failing),
    ]
    assert _kinds(items) == {"old": "archive:floor"}


def test_proven_episodic_memories_are_promoted() -> None:
    items = [
        _item("p", "episodic", 30, mean=5 / 7, useful=3),
        _item("few", "episodic", 30, mean=0.75, useful=2),  # not enough evidence
        _item("mixed", "episodic", 30, mean=0.62, useful=3),  # too many failures
        _item("sem", "semantic", 30, mean=0.9, useful=9),  # already semantic
        _item("w", "working", 0, mean=0.9, useful=9),
    ]  # only episodic is promoted
    assert _kinds(items) == {"p": "promote:useful"}


def test_caps_archive_lowest_activation_per_user_and_tier() -> None:
    policy = RetentionPolicy(
        tiers={"episodic": TierRetention(half_life_s=86_400.0 * 14, cap=2, floor=0.1)}
    )
    items = [
        _item("a", "episodic", 1),
        _item("b", "episodic", 30),
        _item("c", "episodic", 2),
        _item("d", "episodic", 1, mean=0.2),
        _item("x", "episodic", 90, user="v"),
        _item("p", "episodic", 100, mean=0.9, useful=5),
    ]  # promoted: leaves the tier
    assert _kinds(items, policy) == {"b": "archive:cap", "d": "archive:cap", "p": "promote:useful"}


def test_cap_ties_go_to_the_oldest_then_id() -> None:
    policy = RetentionPolicy(tiers={"episodic": TierRetention(half_life_s=0.0, cap=1)})
    items = [_item("b", "episodic", 5), _item("a", "episodic", 5), _item("c", "episodic", 9)]
    assert _kinds(items, policy) == {"c": "archive:cap", "a": "archive:cap"}


def test_decisions_are_stable_when_applied() -> None:
    items = [_item("w", "working", 2), _item("e", "episodic", 1), _item("p", "episodic", 1, 0.8, 4)]
    actions = decide_retention(items, NOW, DEFAULT_RETENTION)
    gone = {a.id for a in actions}
    after = [i for i in items if i.id not in gone] + [_item("p", "semantic", 1, 0.8, 4)]
    assert decide_retention(after, NOW, DEFAULT_RETENTION) == []
