"""LanceDB implementation of :class:`memory.store.MemoryStore`.

- One table per tenant, named from a slug plus a hash of the tenant id (any tenant string
  is safe, two tenants never share a table). The embedding model id and dimension live in
  the table's schema metadata; opening a table with another model raises
  :class:`ModelMismatch`.
- Every mutation runs in its tenant's writer lane (:mod:`memory.lanes`), so this replica's
  writes to a table are serialised and another tenant's slow work never waits in front of
  them; compaction runs there too every ``optimize_every`` writes. Vector index creation,
  which takes minutes at scale, runs on a separate maintenance thread. Counters and state
  changes are table-side UPDATEs, atomic across replicas too.
- Filters are :mod:`lancedb.expr` expressions built from typed values, never SQL text.
- Hot-path search is answered from per-(tenant, user) :class:`memory.index.ScopeIndex`
  objects, loaded lazily *in the tenant's writer lane* (so a load never races a write) and
  kept in sync by the writer; least recently used scopes are evicted past ``max_cached_rows``.
- With a :class:`memory.peers.PeerFeed` (replicas sharing the tables), every commit is
  announced to the other replicas and theirs are applied here (see :mod:`memory.peers`);
  tables are then read at their latest version on every operation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.expr import Expr, col, lit
from lancedb.index import BTree
from threadpoolctl import threadpool_limits

from memory.index import ScopeIndex
from memory.lance_rows import (
    DIM_KEY,
    EDITABLE_COLUMNS,
    MODEL_KEY,
    TENANT_KEY,
    decode_cursor,
    encode_cursor,
    filter_expr,
    from_arrow,
    next_batch,
    schema_for,
    table_name,
    to_arrow,
)
from memory.lanes import Lanes
from memory.long_lived import SETTLE_ROWS, LongLived
from memory.model import Memory, Tier
from memory.peers import PeerFeed, TableChange, VersionLedger
from memory.scope_cache import ScopeCache
from memory.store import (
    Candidates,
    Change,
    ListPage,
    MemoryStats,
    ModelMismatch,
    ScopeFilter,
    Vectors,
)

__all__ = ["LanceMemoryStore", "table_name"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SCALAR_COLUMNS = ("id", "user", "session")
_STATS_COLUMNS = ["id", "user", "tier", "created_at", "last_used_at", "useful", "not_useful"]


class LanceMemoryStore:
    """Durable per-tenant LanceDB tables with RAM search structures in front."""

    def __init__(
        self,
        uri: str | Path,
        *,
        model_id: str,
        dimension: int,
        max_cached_rows: int = 2_000_000,
        optimize_every: int = 32,
        vector_index_min_rows: int | None = 250_000,
        peers: PeerFeed | None = None,
        refresh_s: float = 5.0,
        settle_rows: int | None = SETTLE_ROWS,
    ) -> None:
        self.model_id = model_id
        self.dimension = dimension
        self._uri = str(uri)
        self._optimize_every = optimize_every
        self._vector_index_min_rows = vector_index_min_rows
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._tables_lock = threading.Lock()
        self._scopes = ScopeCache(max_cached_rows)
        self._long_lived = LongLived(settle_rows)  # cached rows out of full collections
        self._peers = peers
        self._refresh_s = refresh_s
        self._versions = VersionLedger()  # each tenant's entries in its writer lane only
        self._checked: dict[str, float] = {}  # tenant -> when its version was last checked
        self._closed = False
        self._writes: dict[str, int] = {}
        self._indexed: set[str] = set()
        # One lane per tenant (memory.lanes): a table keeps one writer, and a tenant's slow
        # scope load or write holds up no other tenant. Four, so two tenants' long loads
        # still leave lanes for the rest; what runs at once is bounded by the cores anyway.
        self._writer = Lanes(4, thread_name_prefix="memshadow-lance-writer")
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="memshadow-lance-maint")
        # Recall has its own small pool: it never queues behind ingestion's embedding batches
        # and WAL writes in the default executor, and a recall whose caller gave up (deadline)
        # while it was queued is dropped without running. Two threads for two cores: each
        # runs one query embedding and a numpy scan, and an idle one shares the other's scan.
        self._recall = ThreadPoolExecutor(2, thread_name_prefix="memshadow-recall")
        # Lance logs routine internals (compaction, index training) at INFO/WARNING.
        for name in ("lancedb", "lance"):
            logging.getLogger(name).setLevel(logging.ERROR)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        # Scope scans are memory-bound matrix-vector products that already run on the recall
        # pool's two threads; OpenBLAS splitting each one over its own pool as well makes the
        # threads fight for 2 cores (10k rows, another process busy: 8.3 ms of CPU and 17.8 ms
        # wall per scan with OpenBLAS's pool, 2.5 / 4.5 ms without). Process-wide, on purpose.
        threadpool_limits(1, user_api="blas")
        if self._uri.startswith(("s3://", "gs://", "az://")) is False:
            Path(self._uri).mkdir(parents=True, exist_ok=True)
        # Shared with other replicas: read every table at its latest version, always.
        consistency = timedelta(0) if self._peers is not None else None
        self._db = await asyncio.to_thread(
            lancedb.connect, self._uri, read_consistency_interval=consistency
        )
        if self._peers is not None:
            self._peers.subscribe(self._on_peer_change, self._on_peer_gap)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._writer.shutdown)
        await asyncio.to_thread(self._maintenance.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._recall.shutdown, wait=True, cancel_futures=True)

    async def _on_writer(self, tenant: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the tenant's writer lane, after what the lane holds already."""
        return await asyncio.wrap_future(self._writer.submit(tenant, fn))

    async def _write(self, tenant: str, op: Callable[[], T], **touched: Any) -> T:
        """Run a mutation in the tenant's writer lane; with peers, account for the versions it
        committed and announce them (awaited: a forget is announced before it returns)."""

        def run() -> tuple[T, TableChange | None]:
            if self._peers is None:
                return op(), None
            table = self._table(tenant, create=False)
            before = table.version if table is not None else 0
            result = op()
            table = table or self._table(tenant, create=False)
            after = table.version if table is not None else before
            if after <= before:
                return result, None
            self._versions.note(tenant, before + 1, after)
            return result, TableChange(tenant, before + 1, after, **touched)

        result, change = await self._on_writer(tenant, run)
        if change is not None and self._peers is not None:
            await self._peers.publish(change)
        return result

    # -- tables ------------------------------------------------------------------------
    def _table(self, tenant: str, *, create: bool) -> Any:
        name = table_name(tenant)
        with self._tables_lock:
            table = self._tables.get(name)
            if table is not None:
                return table
            try:
                table = self._db.open_table(name)
            except ValueError:  # "Table ... was not found"
                if not create:
                    return None
                schema = schema_for(self.model_id, self.dimension, tenant)
                table = self._db.create_table(name, schema=schema, exist_ok=True)
            self._check_model(tenant, table.schema)
            self._tables[name] = table
            return table

    def _check_model(self, tenant: str, schema: pa.Schema) -> None:
        meta = schema.metadata or {}
        model = meta.get(MODEL_KEY, b"?").decode()
        dim = int(meta.get(DIM_KEY, b"0"))
        if model != self.model_id or dim != self.dimension:
            raise ModelMismatch(
                f"tenant {tenant!r}: its memories were embedded with {model!r} (dimension {dim})"
                f" but this server embeds with {self.model_id!r} (dimension {self.dimension}). "
                "Configure the original model, or export and re-import to re-embed."
            )

    # -- writes ------------------------------------------------------------------------
    async def add(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        if memories:
            await self._write(
                tenant,
                lambda: self._upsert(tenant, memories, vectors, new=new),
                ids=tuple(m.id for m in memories),
            )

    def _upsert(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        table = self._table(tenant, create=True)
        data = to_arrow(memories, vectors, table.schema)
        if new:
            # Ids the caller guarantees are not in the table: a plain append, which unlike
            # merge_insert does not join against the whole table.
            table.add(data)
        else:
            (table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
             .execute(data))  # fmt: skip
        self._cache(tenant, memories, vectors)
        self._after_write(tenant, table)

    def _cache(self, tenant: str, memories: Sequence[Memory], vectors: Vectors) -> None:
        """Written rows into the scopes of theirs that are cached."""
        by_user: dict[str, list[int]] = {}
        for i, memory in enumerate(memories):
            by_user.setdefault(memory.user, []).append(i)
        for user, rows in by_user.items():
            scope = self._scopes.get(tenant, user)
            if scope is not None:
                scope.upsert([memories[i] for i in rows], vectors[rows])
                self._long_lived.added(len(rows))

    def _after_write(self, tenant: str, table: Any) -> None:
        self._writes[tenant] = self._writes.get(tenant, 0) + 1
        if self._writes[tenant] % self._optimize_every == 0:
            self._optimize(tenant, table, cleanup=False)

    def _optimize(self, tenant: str, table: Any, *, cleanup: bool) -> None:
        # Compaction merges the small fragments that batched appends still leave behind and
        # folds new rows into existing indexes; cleanup drops files of older versions, which
        # is what finally removes forgotten rows from disk.
        # 1 ms, not 0: same effect, without lancedb warning on every forget.
        table.optimize(cleanup_older_than=timedelta(milliseconds=1) if cleanup else None)
        if tenant not in self._indexed:
            for column in _SCALAR_COLUMNS:
                table.create_index(column, config=BTree(), replace=True)
            self._indexed.add(tenant)
        rows = table.count_rows()
        if self._vector_index_min_rows is not None and rows >= self._vector_index_min_rows:
            self._maintenance.submit(self._ensure_vector_index, tenant, table)

    def _ensure_vector_index(self, tenant: str, table: Any) -> None:
        if any(index.columns == ["vector"] for index in table.list_indices()):
            return
        try:
            table.create_index(
                metric="cosine", index_type="IVF_HNSW_SQ", vector_column_name="vector"
            )
        except (RuntimeError, ValueError, OSError) as error:
            log.warning("vector index for tenant %r not built (will retry): %s", tenant, error)

    async def optimize(self, tenant: str, *, cleanup: bool = True) -> None:
        """Compact now (and with ``cleanup`` drop old versions): used after a forget."""
        table = await asyncio.to_thread(self._table, tenant, create=False)
        if table is not None:
            await self._write(tenant, lambda: self._optimize(tenant, table, cleanup=cleanup))

    async def delete(self, tenant: str, ids: Sequence[str]) -> int:
        return await self._write(
            tenant,
            lambda: self._delete(tenant, col("id").isin(list(ids)), ids),
            ids=tuple(ids),
            removed=True,
        )

    async def delete_scope(self, tenant: str, user: str, session: str | None) -> int:
        where = col("user") == lit(user)
        if session is not None:
            where = where & (col("session") == lit(session))
        return await self._write(
            tenant,
            lambda: self._delete(tenant, where, None, user, session),
            user=user,
            session=session,
            removed=True,
        )

    async def drop_tenant(self, tenant: str) -> int:
        """Drop the tenant's table (its files go with it) and every cached scope of it; the
        memories it held. Peers drop theirs when they hear of it."""
        dropped = await self._on_writer(tenant, lambda: self._drop_tenant(tenant))
        if dropped is not None and self._peers is not None:
            await self._peers.publish(TableChange(tenant, 0, 0, removed=True, dropped=True))
        return dropped or 0

    def _drop_tenant(self, tenant: str) -> int | None:
        table = self._table(tenant, create=False)
        if table is None:
            return None
        rows = int(table.count_rows())
        self._db.drop_table(table_name(tenant))
        self._forget_table(tenant)
        return rows

    def _forget_table(self, tenant: str) -> None:
        """The table is gone: no handle, no scope, no version kept of it here."""
        with self._tables_lock:
            self._tables.pop(table_name(tenant), None)
        self._scopes.drop(tenant, lambda user, scope: True)
        self._versions.forget(tenant)
        self._indexed.discard(tenant)
        self._writes.pop(tenant, None)

    def _delete(
        self, tenant: str, where: Expr, ids: Sequence[str] | None,
        user: str | None = None, session: str | None = None,
    ) -> int:  # fmt: skip
        table = self._table(tenant, create=False)
        if table is None or (ids is not None and not ids):
            return 0
        deleted = int(table.delete(where).num_deleted_rows)
        for scope_user, scope in self._scopes.of_tenant(tenant).items():
            if ids is not None:
                scope.remove(ids)
            elif scope_user == user and session is not None:
                scope.remove_session(session)
            elif scope_user == user:
                self._scopes.drop(tenant, lambda doomed_user, _: doomed_user == user)
        self._after_write(tenant, table)
        return deleted

    async def touch(
        self, tenant: str, ids: Sequence[str], *,
        useful: float = 0.0, not_useful: float = 0.0, reinforced: int = 0,
    ) -> int:  # fmt: skip
        return await self._write(
            tenant, lambda: self._touch(tenant, ids, useful, not_useful, reinforced), ids=tuple(ids)
        )

    def _touch(
        self, tenant: str, ids: Sequence[str], useful: float, not_useful: float, reinforced: int
    ) -> int:
        """Add to the counters in one UPDATE: Lance re-runs it on a conflicting commit, so
        credits that replicas sharing the table make at once all count (reading the rows
        and writing them back lost most of them: tests/memory/test_shared_table_writes.py)."""
        table = self._table(tenant, create=False)
        if table is None or not ids:
            return 0
        where = col("id").isin(list(ids))
        table.update(where=where, values_sql={
            "useful": f"useful + {float(useful)!r}",
            "not_useful": f"not_useful + {float(not_useful)!r}",
            "reinforced": f"reinforced + {int(reinforced)}",
            "last_used_at": "now()",
        })  # fmt: skip
        return len(self._reread(tenant, table, where))

    async def revise(self, tenant: str, memory: Memory, vector: Vectors | None) -> Memory | None:
        return await self._write(
            tenant, lambda: self._revise(tenant, memory, vector), ids=(memory.id,)
        )

    def _revise(self, tenant: str, memory: Memory, vector: Vectors | None) -> Memory | None:
        """A merge of the edited columns alone: no row is inserted when the memory was
        forgotten meanwhile, and counters credited meanwhile are not written back."""
        table = self._table(tenant, create=False)
        if table is None:
            return None
        names = [*EDITABLE_COLUMNS, *(["vector"] if vector is not None else [])]
        schema = pa.schema([table.schema.field(name) for name in names])
        vectors = None if vector is None else np.asarray(vector, np.float32).reshape(1, -1)
        merged = (
            table.merge_insert("id")
            .when_matched_update_all()
            .execute(to_arrow([memory], vectors, schema))
        )
        if merged.num_updated_rows == 0:
            return None
        stored = self._reread(tenant, table, col("id") == lit(memory.id))
        return stored[0] if stored else None

    async def mark(self, tenant: str, changes: Mapping[str, Change]) -> list[str]:
        if not changes:
            return []
        return await self._write(tenant, lambda: self._mark(tenant, changes), ids=tuple(changes))

    def _mark(self, tenant: str, changes: Mapping[str, Change]) -> list[str]:
        """One guarded UPDATE per kind of change: applied only where the memory is still
        live (and in ``if_tier``) when it commits, whoever changed it since the decision, and
        never overwriting a concurrent credit as writing back whole rows did."""
        table = self._table(tenant, create=False)
        if table is None:
            return []
        live = filter_expr(ScopeFilter(None))
        found = self._query(table, col("id").isin(list(changes)) & live, ["id", "tier"])
        groups: dict[tuple[tuple[tuple[str, object], ...], Tier | None], list[str]] = {}
        for memory_id, tier in zip(found["id"].to_pylist(), found["tier"].to_pylist(), strict=True):
            change = changes[memory_id]
            values = tuple(sorted(change.updates().items()))
            if values and change.if_tier in (None, Tier(tier)):
                groups.setdefault((values, change.if_tier), []).append(memory_id)
        changed: list[str] = []
        for (values, if_tier), group in groups.items():
            where = col("id").isin(group) & live
            if if_tier is not None:
                where = where & (col("tier") == lit(if_tier.value))
            wanted = {k: v.value if isinstance(v, Tier) else v for k, v in values}
            if table.update(where=where, values=wanted).rows_updated == 0:
                continue
            for memory in self._reread(tenant, table, col("id").isin(group)):
                if all(getattr(memory, k) == v for k, v in values):
                    changed.append(memory.id)
        return changed

    def _reread(self, tenant: str, table: Any, where: Expr) -> list[Memory]:
        """Rows a table-side UPDATE changed, read back into the cached scopes."""
        memories, vectors = from_arrow(tenant, self._query(table, where))
        if memories:
            self._cache(tenant, memories, vectors)
        self._after_write(tenant, table)
        return memories

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _query(table: Any, where: Expr, columns: list[str] | None = None) -> pa.Table:
        query = table.search().where(where).limit(None)
        return (query.select(columns) if columns else query).to_arrow()

    def _load_scope(self, tenant: str, user: str) -> ScopeIndex | None:
        """Runs in the tenant's writer lane, so no write can slip between the read and the
        cache."""
        cached = self._scopes.get(tenant, user)
        if cached is not None:
            return cached
        table = self._table(tenant, create=False)
        if table is None:
            return None
        generation = self._scopes.generation
        if self._peers is not None:
            if not self._scopes.of_tenant(tenant):  # account from this version on
                self._versions.forget(tenant)
            self._versions.start(tenant, table.version)
        memories, vectors = from_arrow(tenant, self._query(table, filter_expr(ScopeFilter(user))))
        scope = ScopeIndex(self.dimension)
        scope.upsert(memories, vectors.reshape(len(memories), self.dimension))
        # If another replica's change dropped scopes while this one was read, it is served
        # to the search that asked but not kept: it may be stale.
        self._scopes.keep(tenant, user, scope, generation)
        self._long_lived.added(len(memories))
        return scope

    async def _scope(self, tenant: str, user: str) -> ScopeIndex | None:
        self._check_later(tenant)
        scope = self._scopes.get(tenant, user)
        if scope is None:
            scope = await self._on_writer(tenant, lambda: self._load_scope(tenant, user))
        return scope

    # -- other replicas (see memory.peers) -----------------------------------------------
    def _on_peer_change(self, change: TableChange) -> None:
        """On the event loop, as the announcement arrives: what it removed leaves RAM at
        once; what it wrote is re-read from the table in the tenant's writer lane."""
        if self._closed:
            return
        if change.dropped:
            self._scopes.drop(change.tenant, lambda user, scope: True)
        elif change.removed:
            self._scopes.drop(
                change.tenant,
                lambda user, scope: (
                    user == change.user or any(scope.get(i) is not None for i in change.ids)
                ),
            )
        self._writer.submit(
            change.tenant, lambda: self._apply_peer_change(change)
        ).add_done_callback(_log_failure)

    def _on_peer_gap(self) -> None:
        """Announcements may have been missed: trust nothing cached."""
        dropped = self._scopes.drop(None, lambda user, scope: True)
        if dropped:
            log.info("peer feed was cut off; dropped %d cached scopes", dropped)

    def _apply_peer_change(self, change: TableChange) -> None:
        if change.dropped:
            self._forget_table(change.tenant)
            return
        self._versions.note(change.tenant, change.first_version, change.last_version)
        if change.removed or not change.ids:
            return
        cached = self._scopes.of_tenant(change.tenant)
        table = self._table(change.tenant, create=False) if cached else None
        if table is None:
            return
        found = self._query(table, col("id").isin(list(change.ids)))
        memories, vectors = from_arrow(change.tenant, found)
        gone = set(change.ids) - {m.id for m in memories}
        for user, scope in cached.items():
            rows = [i for i, m in enumerate(memories) if m.user == user]
            if rows:
                scope.upsert([memories[i] for i in rows], vectors[rows])
                self._long_lived.added(len(rows))
            if gone:
                scope.remove(gone)

    def _check_later(self, tenant: str) -> None:
        """At most every ``refresh_s`` per tenant, look for commits nobody announced."""
        if self._peers is None or self._closed:
            return
        now = time.monotonic()
        if now - self._checked.get(tenant, float("-inf")) < self._refresh_s:
            return
        self._checked[tenant] = now
        checked = self._writer.submit(tenant, lambda: self._check_version(tenant))
        checked.add_done_callback(_log_failure)

    def _check_version(self, tenant: str) -> None:
        table = self._table(tenant, create=False)
        if table is not None and self._versions.missed(tenant, table.version):
            dropped = self._scopes.drop(tenant, lambda user, scope: True)
            self._versions.forget(tenant)
            log.info("tenant %r changed unannounced; dropped %d cached scopes", tenant, dropped)

    async def candidates(
        self,
        tenant: str,
        query_vector: Vectors | Callable[[], Vectors],
        query_text: str,
        scope: ScopeFilter,
        limit: int,
    ) -> Candidates:
        if scope.user is None:
            raise ValueError("recall is always scoped to one user")
        index = await self._scope(tenant, scope.user)
        if index is None:
            return Candidates(vectors=np.zeros((0, self.dimension), np.float32))
        abandoned = threading.Event()

        def search() -> Candidates:
            # One worker-thread hop for the query embedding and the scope search (ONNX
            # Runtime and numpy release the GIL): the event loop never runs either.
            vector = query_vector() if callable(query_vector) else query_vector
            if abandoned.is_set():  # the caller's deadline passed during the embedding
                return Candidates(vectors=np.zeros((0, self.dimension), np.float32))
            return index.search(
                vector, query_text, session=scope.session, tiers=scope.tiers, limit=limit,
                helper=self._recall,
            )  # fmt: skip

        try:
            return await asyncio.get_running_loop().run_in_executor(self._recall, search)
        except asyncio.CancelledError:
            abandoned.set()  # a queued search never starts; a running one stops after embedding
            raise

    async def nearest(
        self, tenant: str, user: str, vectors: Vectors, hashes: Sequence[str]
    ) -> list[tuple[Memory | None, float]]:
        index = await self._scope(tenant, user)
        if index is None:
            return [(None, 0.0)] * len(hashes)
        # Every exact hash is a dict hit; the rest share one matrix product, off the loop.
        return await asyncio.to_thread(index.nearest, vectors, hashes)

    async def by_hash(self, tenant: str, user: str, hashes: Sequence[str]) -> list[Memory | None]:
        index = await self._scope(tenant, user)
        return [None if index is None else index.by_hash(h) for h in hashes]

    async def matching(
        self, tenant: str, user: str, phrases: Sequence[str], limit: int = 1000
    ) -> list[Memory]:
        if not phrases:
            return []

        def read() -> list[Memory]:
            table = self._table(tenant, create=False)
            if table is None:
                return []
            content = col("content").lower()
            any_phrase = content.contains(lit(phrases[0]))
            for phrase in phrases[1:]:
                any_phrase = any_phrase | content.contains(lit(phrase))
            where = filter_expr(ScopeFilter(user)) & any_phrase
            found = table.search().where(where).limit(limit).to_arrow()
            return from_arrow(tenant, found)[0]

        return await asyncio.to_thread(read)

    async def stats(self, tenant: str, scope: ScopeFilter) -> list[MemoryStats]:
        def read() -> list[MemoryStats]:
            table = self._table(tenant, create=False)
            if table is None:
                return []
            rows = self._query(table, filter_expr(scope), _STATS_COLUMNS).to_pylist()
            return [MemoryStats(**{**row, "tier": Tier(row["tier"])}) for row in rows]

        return await asyncio.to_thread(read)

    async def count_live(self, tenant: str) -> dict[Tier, int]:
        def read() -> dict[Tier, int]:
            table = self._table(tenant, create=False)
            if table is None:
                return {}
            live = (col("superseded_by") == lit("")) & (col("archived") == lit(False))
            # count_rows takes SQL text only: lancedb renders it from the typed expression.
            # Four counts take ~50 ms at 100k rows; reading the tier column took ~110 ms.
            counts = {
                tier: table.count_rows(((col("tier") == lit(tier.value)) & live).to_sql())
                for tier in Tier
            }
            return {tier: int(n) for tier, n in counts.items() if n}

        return await asyncio.to_thread(read)

    async def tenants(self) -> list[str]:
        return await asyncio.to_thread(self._tenants)

    def _tenants(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self._db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                break
        out = []
        for name in names:
            if not name.startswith("t_"):
                continue
            meta = self._db.open_table(name).schema.metadata or {}
            tenant = meta.get(TENANT_KEY)
            if tenant is not None and table_name(tenant.decode()) == name:
                out.append(tenant.decode())
        return sorted(out)

    @property
    def cached_rows(self) -> int:
        return self._scopes.rows

    async def prewarm(self, max_rows: int) -> tuple[int, int]:
        """Load the scopes of the users active most recently (a memory written or used),
        newest first, while they fit in ``max_rows`` (and the cache).

        A scope is otherwise loaded by its first recall, and a large one takes longer than a
        recall's deadline (10k memories: ~1 s here): after a restart, each busy user's first
        request would go without memory. One scope at a time, in its tenant's lane.
        """
        budget = min(max_rows, self._scopes.max_rows)
        users: list[tuple[float, str, str, int]] = []
        for tenant in await self.tenants():
            activity = await asyncio.to_thread(self._activity, tenant)
            users.extend((latest, tenant, user, rows) for user, rows, latest in activity)
        scopes = loaded = 0
        for _, tenant, user, rows in sorted(users, reverse=True):
            if self._closed:
                break
            if loaded + rows > budget:
                continue  # a smaller scope may still fit
            if await self._scope(tenant, user) is not None:
                scopes, loaded = scopes + 1, loaded + rows
        return scopes, loaded

    def _activity(self, tenant: str) -> list[tuple[str, int, float]]:
        """Per user of the tenant: live memories, and when one was last written or used."""
        table = self._table(tenant, create=False)
        if table is None:
            return []
        rows = self._query(
            table, filter_expr(ScopeFilter(None)), ["user", "created_at", "last_used_at"]
        )
        if rows.num_rows == 0:
            return []
        stats = rows.group_by("user").aggregate(
            [("user", "count"), ("created_at", "max"), ("last_used_at", "max")]
        )
        latest = [
            max(created, used).timestamp()
            for created, used in zip(
                stats["created_at_max"].to_pylist(),
                stats["last_used_at_max"].to_pylist(),
                strict=True,
            )
        ]
        return list(
            zip(stats["user"].to_pylist(), stats["user_count"].to_pylist(), latest, strict=True)
        )

    async def open_tenant(self, tenant: str) -> None:
        """Create or open the tenant's table; raises :class:`ModelMismatch` on a model change."""
        await asyncio.to_thread(self._table, tenant, create=True)

    async def get(self, tenant: str, memory_id: str) -> tuple[Memory, Vectors] | None:
        def read() -> tuple[Memory, Vectors] | None:
            table = self._table(tenant, create=False)
            if table is None:
                return None
            memories, vectors = from_arrow(tenant, self._query(table, col("id") == lit(memory_id)))
            return (memories[0], vectors[0]) if memories else None

        return await asyncio.to_thread(read)

    async def list_memories(
        self, tenant: str, scope: ScopeFilter, cursor: str | None, limit: int
    ) -> ListPage:
        return await asyncio.to_thread(self._list, tenant, scope, cursor, limit)

    def _list(self, tenant: str, scope: ScopeFilter, cursor: str | None, limit: int) -> ListPage:
        table = self._table(tenant, create=False)
        if table is None:
            return ListPage([], None)
        keys = self._query(table, filter_expr(scope), ["id", "created_at"]).to_pylist()
        order = sorted((row["created_at"], row["id"]) for row in keys)
        start = 0
        if cursor is not None:
            after = decode_cursor(cursor)
            start = next((i for i, (t, i_) in enumerate(order) if (t.timestamp(), i_) > after),
                         len(order))  # fmt: skip
        page = order[start : start + limit]
        if not page:
            return ListPage([], None)
        found, _ = from_arrow(tenant, self._query(table, col("id").isin([i for _, i in page])))
        by_id = {m.id: m for m in found}
        items = [by_id[i] for _, i in page if i in by_id]
        more = start + limit < len(order)
        return ListPage(
            items, encode_cursor(page[-1][0].timestamp(), page[-1][1]) if more else None
        )

    async def export(
        self, tenant: str, scope: ScopeFilter
    ) -> AsyncIterator[tuple[Memory, Vectors]]:
        table = await asyncio.to_thread(self._table, tenant, create=False)
        if table is None:
            return
        reader = await asyncio.to_thread(
            lambda: table.search().where(filter_expr(scope)).limit(None).to_batches()
        )
        while True:
            batch = await asyncio.to_thread(next_batch, reader)
            if batch is None:
                return
            memories, vectors = from_arrow(tenant, pa.Table.from_batches([batch]))
            for memory, vector in zip(memories, vectors, strict=True):
                yield memory, vector


def _log_failure(future: Future[None]) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        log.warning("syncing with another replica failed (the version check heals it): %r", error)
