"""The RAM search indexes a store keeps per (tenant, user) scope, least recently used first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from memory.index import ScopeIndex

__all__ = ["ScopeCache"]


class ScopeCache:
    """Thread-safe cache of :class:`memory.index.ScopeIndex` objects, bounded by rows.

    ``generation`` moves on every :meth:`drop`, so a scope read from the table while a drop
    happened (the drop may concern what it read) is not kept: see :meth:`keep`.
    """

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._scopes: OrderedDict[tuple[str, str], ScopeIndex] = OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, tenant: str, user: str) -> ScopeIndex | None:
        with self._lock:
            scope = self._scopes.get((tenant, user))
            if scope is not None:
                self._scopes.move_to_end((tenant, user))
            return scope

    def keep(self, tenant: str, user: str, scope: ScopeIndex, generation: int) -> None:
        """Cache a scope read at ``generation``, unless scopes were dropped since."""
        with self._lock:
            if generation != self.generation:
                return
            self._scopes[(tenant, user)] = scope
            total = sum(s.rows for s in self._scopes.values())
            while total > self._max_rows and len(self._scopes) > 1:
                _, evicted = self._scopes.popitem(last=False)
                total -= evicted.rows

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @property
    def rows(self) -> int:
        """Rows of every cached scope (live or not: what they hold in RAM)."""
        with self._lock:
            return sum(s.rows for s in self._scopes.values())

    def of_tenant(self, tenant: str) -> dict[str, ScopeIndex]:
        """The tenant's cached scopes, by user."""
        with self._lock:
            return {user: s for (t, user), s in self._scopes.items() if t == tenant}

    def drop(self, tenant: str | None, doomed: Callable[[str, ScopeIndex], bool]) -> int:
        """Drop the scopes of ``tenant`` (every tenant: None) that ``doomed(user, scope)``."""
        with self._lock:
            self.generation += 1
            keys = [
                key
                for key, scope in self._scopes.items()
                if (tenant is None or key[0] == tenant) and doomed(key[1], scope)
            ]
            for key in keys:
                del self._scopes[key]
        return len(keys)
