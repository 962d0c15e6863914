"""LanceDB implementation of :class:`memory.store.MemoryStore`.

- One table per tenant, named from a slug plus a hash of the tenant id (any tenant string
  is safe, two tenants never share a table). The embedding model id and dimension live in
  the table's schema metadata; opening a table with another model raises
  :class:`ModelMismatch`.
- Every mutation runs on one writer thread, so writes to a table are serialised (Lance
  commits never conflict and read-modify-write such as usefulness credit is atomic), and
  compaction runs there too every ``optimize_every`` writes. Vector index creation, which
  takes minutes at scale, runs on a separate maintenance thread.
- Filters are :mod:`lancedb.expr` expressions built from typed values, never SQL text.
- Hot-path search is answered from per-(tenant, user) :class:`memory.index.ScopeIndex`
  objects, loaded lazily *on the writer thread* (so a load never races a write) and kept in
  sync by the writer; least recently used scopes are evicted past ``max_cached_rows``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.expr import Expr, col, lit
from lancedb.index import BTree

from memory.index import ScopeIndex
from memory.model import InvalidMemory, Memory, Source, Tier, utcnow
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
_MODEL_KEY = b"memshadow.embedder_model"
_DIM_KEY = b"memshadow.embedder_dimension"
_TENANT_KEY = b"memshadow.tenant"
_SCALAR_COLUMNS = ("id", "user", "session")
_STATS_COLUMNS = ["id", "user", "tier", "created_at", "last_used_at", "useful", "not_useful"]


def table_name(tenant: str) -> str:
    """A Lance-safe, collision-free table name for any tenant id."""
    slug = re.sub(r"[^a-z0-9]+", "-", tenant.lower()).strip("-")[:40] or "tenant"
    return f"t_{slug}_{hashlib.sha256(tenant.encode()).hexdigest()[:16]}"


def _schema(model_id: str, dimension: int, tenant: str) -> pa.Schema:
    ts = pa.timestamp("us", tz="UTC")
    fields = [
        ("id", pa.string()), ("user", pa.string()), ("session", pa.string()),
        ("tier", pa.string()), ("source", pa.string()), ("content", pa.string()),
        ("tokens", pa.int32()), ("content_hash", pa.string()), ("created_at", ts),
        ("last_used_at", ts), ("useful", pa.float32()), ("not_useful", pa.float32()),
        ("reinforced", pa.int32()), ("superseded_by", pa.string()), ("archived", pa.bool_()),
        ("metadata", pa.string()), ("vector", pa.list_(pa.float32(), dimension)),
    ]  # fmt: skip
    metadata = {_MODEL_KEY: model_id.encode(), _DIM_KEY: str(dimension).encode(),
                _TENANT_KEY: tenant.encode()}  # fmt: skip
    return pa.schema([pa.field(name, kind) for name, kind in fields], metadata=metadata)


def _to_arrow(memories: Sequence[Memory], vectors: Vectors, schema: pa.Schema) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in schema.names if name != "vector"}
    for m in memories:
        row = m.model_dump(exclude={"tenant"})
        row["session"] = m.session or ""  # "" not NULL: equality filters stay simple
        row["superseded_by"] = m.superseded_by or ""
        row["tier"], row["source"] = m.tier.value, m.source.value
        row["metadata"] = json.dumps(m.metadata, separators=(",", ":"), default=str)
        for name in columns:
            columns[name].append(row[name])
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    dim = schema.field("vector").type.list_size
    arrays = {n: pa.array(v, schema.field(n).type) for n, v in columns.items()}
    arrays["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.Table.from_pydict(arrays, schema=schema)


def _from_arrow(tenant: str, table: pa.Table) -> tuple[list[Memory], Vectors]:
    rows = table.drop_columns(["vector"]).to_pylist() if "vector" in table.column_names else []
    memories = []
    for row in rows:
        memories.append(Memory(
            **{**row, "tenant": tenant, "session": row["session"] or None,
               "superseded_by": row["superseded_by"] or None, "tier": Tier(row["tier"]),
               "source": Source(row["source"]), "metadata": json.loads(row["metadata"] or "{}")}
        ))  # fmt: skip
    if table.num_rows == 0:
        return memories, np.zeros((0, 0), np.float32)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return memories, np.asarray(flat, np.float32).reshape(table.num_rows, -1)


def _filter(scope: ScopeFilter) -> Expr:
    where = col("id") != lit("")
    if scope.user is not None:
        where = where & (col("user") == lit(scope.user))
    if scope.session is not None:
        where = where & (col("session") == lit(scope.session))
    if scope.tiers is not None:
        where = where & col("tier").isin([t.value for t in sorted(scope.tiers)])
    if not scope.include_inactive:
        where = where & (col("superseded_by") == lit("")) & (col("archived") == lit(False))
    return where


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
    ) -> None:
        self.model_id = model_id
        self.dimension = dimension
        self._uri = str(uri)
        self._max_cached_rows = max_cached_rows
        self._optimize_every = optimize_every
        self._vector_index_min_rows = vector_index_min_rows
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._tables_lock = threading.Lock()
        self._scopes: OrderedDict[tuple[str, str], ScopeIndex] = OrderedDict()
        self._scopes_lock = threading.Lock()
        self._writes: dict[str, int] = {}
        self._indexed: set[str] = set()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="memshadow-lance-writer")
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="memshadow-lance-maint")
        # Recall has its own small pool: it never queues behind ingestion's embedding batches
        # and WAL writes in the default executor, and a recall whose caller gave up (deadline)
        # while it was queued is dropped without running. Two threads for two cores: each
        # runs one single-threaded query embedding and a numpy scan.
        self._recall = ThreadPoolExecutor(2, thread_name_prefix="memshadow-recall")
        # Lance logs routine internals (compaction, index training) at INFO/WARNING.
        for name in ("lancedb", "lance"):
            logging.getLogger(name).setLevel(logging.ERROR)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._uri.startswith(("s3://", "gs://", "az://")) is False:
            Path(self._uri).mkdir(parents=True, exist_ok=True)
        self._db = await asyncio.to_thread(lancedb.connect, self._uri)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        await asyncio.to_thread(self._maintenance.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._recall.shutdown, wait=True, cancel_futures=True)

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

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
                schema = _schema(self.model_id, self.dimension, tenant)
                table = self._db.create_table(name, schema=schema, exist_ok=True)
            self._check_model(tenant, table.schema)
            self._tables[name] = table
            return table

    def _check_model(self, tenant: str, schema: pa.Schema) -> None:
        meta = schema.metadata or {}
        model = meta.get(_MODEL_KEY, b"?").decode()
        dim = int(meta.get(_DIM_KEY, b"0"))
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
            await self._on_writer(lambda: self._upsert(tenant, memories, vectors, new=new))

    def _upsert(
        self, tenant: str, memories: Sequence[Memory], vectors: Vectors, *, new: bool = False
    ) -> None:
        table = self._table(tenant, create=True)
        data = _to_arrow(memories, vectors, table.schema)
        if new:
            # Ids the caller guarantees are not in the table: a plain append, which unlike
            # merge_insert does not join against the whole table.
            table.add(data)
        else:
            (table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
             .execute(data))  # fmt: skip
        by_user: dict[str, list[int]] = {}
        for i, memory in enumerate(memories):
            by_user.setdefault(memory.user, []).append(i)
        for user, rows in by_user.items():
            scope = self._cached_scope(tenant, user)
            if scope is not None:
                scope.upsert([memories[i] for i in rows], vectors[rows])
        self._after_write(tenant, table)

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
            await self._on_writer(lambda: self._optimize(tenant, table, cleanup=cleanup))

    async def delete(self, tenant: str, ids: Sequence[str]) -> int:
        return await self._on_writer(lambda: self._delete(tenant, col("id").isin(list(ids)), ids))

    async def delete_scope(self, tenant: str, user: str, session: str | None) -> int:
        where = col("user") == lit(user)
        if session is not None:
            where = where & (col("session") == lit(session))
        return await self._on_writer(lambda: self._delete(tenant, where, None, user, session))

    def _delete(
        self, tenant: str, where: Expr, ids: Sequence[str] | None,
        user: str | None = None, session: str | None = None,
    ) -> int:  # fmt: skip
        table = self._table(tenant, create=False)
        if table is None or (ids is not None and not ids):
            return 0
        deleted = int(table.delete(where).num_deleted_rows)
        with self._scopes_lock:
            scopes = [(key, s) for key, s in self._scopes.items() if key[0] == tenant]
        for (_, scope_user), scope in scopes:
            if ids is not None:
                scope.remove(ids)
            elif scope_user == user and session is not None:
                scope.remove_session(session)
            elif scope_user == user:
                with self._scopes_lock:
                    self._scopes.pop((tenant, scope_user), None)
        self._after_write(tenant, table)
        return deleted

    async def touch(
        self, tenant: str, ids: Sequence[str], *,
        useful: float = 0.0, not_useful: float = 0.0, reinforced: int = 0,
    ) -> int:  # fmt: skip
        return await self._on_writer(
            lambda: self._touch(tenant, ids, useful, not_useful, reinforced)
        )

    def _touch(
        self, tenant: str, ids: Sequence[str], useful: float, not_useful: float, reinforced: int
    ) -> int:
        """Read-modify-write on the writer thread, so concurrent credits never lose updates."""
        table = self._table(tenant, create=False)
        if table is None or not ids:
            return 0
        memories, vectors = _from_arrow(tenant, self._query(table, col("id").isin(list(ids))))
        now = utcnow()
        updated = [m.model_copy(update={
            "useful": m.useful + useful, "not_useful": m.not_useful + not_useful,
            "reinforced": m.reinforced + reinforced, "last_used_at": now})
            for m in memories]  # fmt: skip
        if updated:
            self._upsert(tenant, updated, vectors)
        return len(updated)

    async def mark(self, tenant: str, changes: Mapping[str, Change]) -> list[str]:
        if not changes:
            return []
        return await self._on_writer(lambda: self._mark(tenant, changes))

    def _mark(self, tenant: str, changes: Mapping[str, Change]) -> list[str]:
        """Read-modify-write on the writer thread: the liveness/tier guard cannot race a write."""
        table = self._table(tenant, create=False)
        if table is None:
            return []
        memories, vectors = _from_arrow(tenant, self._query(table, col("id").isin(list(changes))))
        rows = [
            i for i, m in enumerate(memories)
            if m.live and changes[m.id].if_tier in (None, m.tier)
        ]  # fmt: skip
        updated = [memories[i].model_copy(update=changes[memories[i].id].updates()) for i in rows]
        if updated:
            self._upsert(tenant, updated, vectors[rows])
        return [m.id for m in updated]

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _query(table: Any, where: Expr, columns: list[str] | None = None) -> pa.Table:
        query = table.search().where(where).limit(None)
        return (query.select(columns) if columns else query).to_arrow()

    def _cached_scope(self, tenant: str, user: str) -> ScopeIndex | None:
        with self._scopes_lock:
            scope = self._scopes.get((tenant, user))
            if scope is not None:
                self._scopes.move_to_end((tenant, user))
            return scope

    def _load_scope(self, tenant: str, user: str) -> ScopeIndex | None:
        """Runs on the writer thread, so no write can slip between the read and the cache."""
        cached = self._cached_scope(tenant, user)
        if cached is not None:
            return cached
        table = self._table(tenant, create=False)
        if table is None:
            return None
        memories, vectors = _from_arrow(tenant, self._query(table, _filter(ScopeFilter(user))))
        scope = ScopeIndex(self.dimension)
        scope.upsert(memories, vectors.reshape(len(memories), self.dimension))
        with self._scopes_lock:
            self._scopes[(tenant, user)] = scope
            total = sum(s.rows for s in self._scopes.values())
            while total > self._max_cached_rows and len(self._scopes) > 1:
                _, evicted = self._scopes.popitem(last=False)
                total -= evicted.rows
        return scope

    async def _scope(self, tenant: str, user: str) -> ScopeIndex | None:
        scope = self._cached_scope(tenant, user)
        if scope is None:
            scope = await self._on_writer(lambda: self._load_scope(tenant, user))
        return scope

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
                vector, query_text, session=scope.session, tiers=scope.tiers, limit=limit
            )

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
            where = _filter(ScopeFilter(user)) & any_phrase
            found = table.search().where(where).limit(limit).to_arrow()
            return _from_arrow(tenant, found)[0]

        return await asyncio.to_thread(read)

    async def stats(self, tenant: str, scope: ScopeFilter) -> list[MemoryStats]:
        def read() -> list[MemoryStats]:
            table = self._table(tenant, create=False)
            if table is None:
                return []
            rows = self._query(table, _filter(scope), _STATS_COLUMNS).to_pylist()
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
            tenant = meta.get(_TENANT_KEY)
            if tenant is not None and table_name(tenant.decode()) == name:
                out.append(tenant.decode())
        return sorted(out)

    async def open_tenant(self, tenant: str) -> None:
        """Create or open the tenant's table; raises :class:`ModelMismatch` on a model change."""
        await asyncio.to_thread(self._table, tenant, create=True)

    async def get(self, tenant: str, memory_id: str) -> tuple[Memory, Vectors] | None:
        def read() -> tuple[Memory, Vectors] | None:
            table = self._table(tenant, create=False)
            if table is None:
                return None
            memories, vectors = _from_arrow(tenant, self._query(table, col("id") == lit(memory_id)))
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
        keys = self._query(table, _filter(scope), ["id", "created_at"]).to_pylist()
        order = sorted((row["created_at"], row["id"]) for row in keys)
        start = 0
        if cursor is not None:
            after = _decode_cursor(cursor)
            start = next((i for i, (t, i_) in enumerate(order) if (t.timestamp(), i_) > after),
                         len(order))  # fmt: skip
        page = order[start : start + limit]
        if not page:
            return ListPage([], None)
        found, _ = _from_arrow(tenant, self._query(table, col("id").isin([i for _, i in page])))
        by_id = {m.id: m for m in found}
        items = [by_id[i] for _, i in page if i in by_id]
        more = start + limit < len(order)
        return ListPage(
            items, _encode_cursor(page[-1][0].timestamp(), page[-1][1]) if more else None
        )

    async def export(
        self, tenant: str, scope: ScopeFilter
    ) -> AsyncIterator[tuple[Memory, Vectors]]:
        table = await asyncio.to_thread(self._table, tenant, create=False)
        if table is None:
            return
        reader = await asyncio.to_thread(
            lambda: table.search().where(_filter(scope)).limit(None).to_batches()
        )
        while True:
            batch = await asyncio.to_thread(_next_batch, reader)
            if batch is None:
                return
            memories, vectors = _from_arrow(tenant, pa.Table.from_batches([batch]))
            for memory, vector in zip(memories, vectors, strict=True):
                yield memory, vector


def _next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _encode_cursor(timestamp: float, memory_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([timestamp, memory_id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        timestamp, memory_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(timestamp), str(memory_id)
    except (ValueError, TypeError) as error:
        raise InvalidMemory("cursor", "is not one this server issued") from error
