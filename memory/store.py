"""The storage boundary: a narrow Protocol the service talks to, and the types it exchanges.

The store is durable (LanceDB in :mod:`memory.lancedb_store`) and also answers the hot-path
candidate search from RAM structures it keeps in sync with its own writes. Ranking of those
candidates is not its business (:mod:`memory.retrieval`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from memory.model import Memory, Tier

__all__ = [
    "Candidates",
    "Change",
    "ListPage",
    "MemoryStats",
    "MemoryStore",
    "ModelMismatch",
    "ScopeFilter",
    "Vectors",
]

Vectors = npt.NDArray[np.float32]


class ModelMismatch(RuntimeError):
    """A tenant's table was written with another embedding model or dimension."""


@dataclass(frozen=True)
class ScopeFilter:
    """Which memories of a tenant an operation may touch. ``user=None`` means all users."""

    user: str | None = None
    session: str | None = None
    tiers: frozenset[Tier] | None = None
    include_inactive: bool = False


@dataclass
class Candidates:
    """Hot-path candidates for one query, aligned arrays (one row per memory).

    ``vector_rank``/``keyword_rank`` are 0-based ranks within each retriever's own top list,
    or -1 when the memory was not in that list. ``created`` is each memory's ``created_at``
    in Unix seconds (what recency decay reads, without a datetime per candidate).
    """

    memories: list[Memory] = field(default_factory=list)
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    vector_sim: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    keyword: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    vector_rank: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    keyword_rank: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    created: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))
    searched: int = 0  # live memories considered

    def subset(self, keep: npt.NDArray[np.bool_]) -> Candidates:
        """The rows where ``keep`` is true; each retriever's ranks closed up over them."""
        return Candidates(
            memories=[m for m, kept in zip(self.memories, keep.tolist(), strict=True) if kept],
            vectors=self.vectors[keep],
            vector_sim=self.vector_sim[keep],
            keyword=self.keyword[keep],
            vector_rank=_closed_up(self.vector_rank[keep]),
            keyword_rank=_closed_up(self.keyword_rank[keep]),
            created=self.created[keep],
            searched=self.searched,
        )


def _closed_up(ranks: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Ranks 0..n-1 again in the same order; -1 (not in that retriever's list) stays."""
    out = np.full_like(ranks, -1)
    present = np.flatnonzero(ranks >= 0)
    out[present[np.argsort(ranks[present], kind="stable")]] = np.arange(len(present))
    return out


@dataclass(frozen=True)
class ListPage:
    items: list[Memory]
    next_cursor: str | None


@dataclass(frozen=True)
class Change:
    """A change of state the engine makes on its own (supersession, archiving, promotion).

    Applied only while the memory is still live and, with ``if_tier``, still in that tier:
    the decision was taken on a snapshot, and a memory changed since must not be touched.
    """

    superseded_by: str | None = None
    archived: bool = False
    tier: Tier | None = None
    if_tier: Tier | None = None

    def updates(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.superseded_by is not None:
            out["superseded_by"] = self.superseded_by
        if self.archived:
            out["archived"] = True
        if self.tier is not None:
            out["tier"] = self.tier
        return out


@dataclass(frozen=True)
class MemoryStats:
    """What retention needs to know about a memory: no content, no vector."""

    id: str
    user: str
    tier: Tier
    created_at: datetime
    last_used_at: datetime
    useful: float
    not_useful: float


class MemoryStore(Protocol):
    """What :class:`memory.service.MemoryService` needs from storage.

    ``add`` upserts by id (idempotent); ``candidates`` is the hot path. The rest serve the
    memory API. All methods confine themselves to one tenant's data.
    """

    model_id: str
    dimension: int

    async def add(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        """Upsert by id; ``new=True`` promises the ids are not stored yet (plain append)."""
        ...

    async def revise(self, tenant: str, memory: Memory, vector: Vectors | None) -> Memory | None:
        """Write what a user may edit (content, its hash and token count, metadata, tier;
        with ``vector``, the embedding) into the stored memory of that id, leaving the rest
        as stored; the memory as it is now, or None when it is not stored (never re-added)."""
        ...

    async def candidates(
        self,
        tenant: str,
        query_vector: Vectors | Callable[[], Vectors],
        query_text: str,
        scope: ScopeFilter,
        limit: int,
    ) -> Candidates:
        """Candidates for recall. ``query_vector`` may be a function computing it: the store
        then runs it in the same worker thread as the search, off the event loop."""
        ...

    async def nearest(
        self, tenant: str, user: str, vectors: Vectors, hashes: Sequence[str]
    ) -> list[tuple[Memory | None, float]]: ...

    async def get(self, tenant: str, memory_id: str) -> tuple[Memory, Vectors] | None: ...

    async def list_memories(
        self, tenant: str, scope: ScopeFilter, cursor: str | None, limit: int
    ) -> ListPage: ...

    async def delete(self, tenant: str, ids: Sequence[str]) -> int: ...

    async def delete_scope(self, tenant: str, user: str, session: str | None) -> int: ...

    async def drop_tenant(self, tenant: str) -> int:
        """Drop everything the tenant stored (its table); the memories it held."""
        ...

    async def by_hash(
        self, tenant: str, user: str, hashes: Sequence[str]
    ) -> list[Memory | None]: ...

    async def touch(
        self,
        tenant: str,
        ids: Sequence[str],
        *,
        useful: float = 0.0,
        not_useful: float = 0.0,
        reinforced: int = 0,
    ) -> int: ...

    async def matching(
        self, tenant: str, user: str, phrases: Sequence[str], limit: int = 1000
    ) -> list[Memory]:
        """Live memories of the user whose lowercased content contains any of ``phrases``."""
        ...

    async def mark(self, tenant: str, changes: Mapping[str, Change]) -> list[str]:
        """Apply each change to its memory (see :class:`Change`); the ids actually changed."""
        ...

    async def stats(self, tenant: str, scope: ScopeFilter) -> list[MemoryStats]: ...

    async def count_live(self, tenant: str) -> dict[Tier, int]:
        """How many live memories the tenant has per tier (a tier with none is absent)."""
        ...

    async def tenants(self) -> list[str]:
        """Every tenant with a table in this store (for background maintenance)."""
        ...

    async def open_tenant(self, tenant: str) -> None: ...

    async def prewarm(self, max_rows: int) -> tuple[int, int]:
        """Load the search structures of the most recently active users into RAM, up to
        ``max_rows`` memories; the scopes and memories loaded."""
        ...

    @property
    def cached_rows(self) -> int:
        """Memories held in RAM search structures now."""
        ...

    async def optimize(self, tenant: str, *, cleanup: bool = True) -> None: ...

    def export(self, tenant: str, scope: ScopeFilter) -> AsyncIterator[tuple[Memory, Vectors]]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...
