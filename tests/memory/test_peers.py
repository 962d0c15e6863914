"""What a replica knows of shared table versions, and the messages replicas exchange."""

from __future__ import annotations

from memory.index import ScopeIndex
from memory.peers import TableChange, VersionLedger
from memory.scope_cache import ScopeCache


def test_versions_made_or_announced_are_accounted_for() -> None:
    ledger = VersionLedger()
    ledger.start("t", 5)
    ledger.note("t", 6, 6)  # this replica's commit
    ledger.note("t", 7, 8)  # another's, announced
    assert not ledger.missed("t", 8)
    ledger.note("t", 10, 10)
    assert ledger.missed("t", 10)  # version 9 was never heard of
    assert not ledger.missed("unknown", 3)  # nothing cached of it: nothing to be stale


def test_a_table_dropped_and_created_again_unannounced_is_missed() -> None:
    ledger = VersionLedger()
    ledger.start("t", 40)
    assert ledger.missed("t", 2)  # versions went backwards: not the table the cache read


def test_a_ledger_forgets_a_tenant_until_a_scope_is_cached_again() -> None:
    ledger = VersionLedger()
    ledger.start("t", 1)
    ledger.forget("t")
    ledger.note("t", 2, 2)
    ledger.start("t", 7)
    ledger.start("t", 9)  # a later load does not move the base: older scopes are cached
    assert ledger.missed("t", 8)


def test_a_change_survives_the_wire() -> None:
    change = TableChange("acme", 3, 4, ids=("a", "b"), removed=True, user="ann", session="s")
    assert TableChange.from_bytes(change.to_bytes()) == change
    assert TableChange.from_bytes(TableChange("acme", 1, 1).to_bytes()).ids == ()
    dropped = TableChange("acme", 0, 0, removed=True, dropped=True)
    assert TableChange.from_bytes(dropped.to_bytes()) == dropped


def test_a_scope_read_while_scopes_were_dropped_is_not_kept() -> None:
    cache = ScopeCache(max_rows=1000)
    stale = cache.generation
    cache.drop("t", lambda user, scope: True)
    cache.keep("t", "ann", ScopeIndex(4), stale)
    assert cache.get("t", "ann") is None
    cache.keep("t", "ann", ScopeIndex(4), cache.generation)
    assert cache.get("t", "ann") is not None
    assert cache.drop(None, lambda user, scope: user == "ann") == 1
