"""``MemoryService``: everything the proxy needs from the memory engine, and nothing of HTTP.

Build it once in the app's lifespan, ``await start()``, and ``await aclose()`` at shutdown
(which applies every write acknowledged in this replica's write-ahead log before returning;
what it acknowledged into a shared stream stays there for the tenant's next writer).

Stores are prepared here, before anything touches disk: validate → redact (policy) → chunk
at sentence boundaries → hash and count tokens → exact-duplicate check (a duplicate returns
and reinforces the existing memory) → write-ahead log (durable on return), or with
``stream`` the shared ingestion stream (:mod:`memory.stream_ingest`). Embedding, the
near-duplicate check and the LanceDB write follow within milliseconds in the ingestor
(:mod:`memory.apply`), on this replica or on the tenant's writer.

A :class:`memory.pruner.Pruner` runs in the background between ``start()`` and ``aclose()``
(every ``prune_interval_s``; ``None`` turns it off): it archives memories whose activation
fell below the retention floor or past a tier's cap, and promotes proven episodic memories
to semantic, never touching ``long_term`` ones.

Operations that read or change what is already stored (get, list, update, delete, forget,
export) first wait for the ingestor to apply what was acknowledged, so they never miss a
memory that ``store`` already returned. With a shared stream, that is what this replica
acknowledged, wherever it is applied; deletes and forgets wait for what any replica
acknowledged before them, so a forgotten memory cannot come back from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory.apply import BatchApplier
from memory.chunking import DEFAULT_CHUNK_TOKENS, chunk_text
from memory.embedder import Embedder
from memory.ingest import Ingestion, Ingestor
from memory.lancedb_store import LanceMemoryStore
from memory.model import (
    InvalidMemory,
    Memory,
    NewMemory,
    RecallResult,
    Scope,
    Source,
    Tier,
    check_scope_part,
    content_hash,
    parse_new_memory,
    utcnow,
)  # fmt: skip
from memory.outcome_journal import OutcomeJournal
from memory.outcomes import (
    Forgotten,
    OutcomeFeed,
    OutcomeNews,
    QuestionOutcomes,
    Verdict,
    question_key,
)
from memory.peers import PeerFeed
from memory.pruner import Pruner, PruneReport
from memory.retrieval import RecallWeights, rank, without_repeats
from memory.store import MemoryStore, ScopeFilter
from memory.stream_ingest import StreamConfig, StreamIngestor
from memory.tokens import TokenCounter
from memory.usefulness import UsefulnessPrior, evidence
from policies.redaction import RedactionPolicy, redact
from policies.retention import DEFAULT_RETENTION, RetentionPolicy

__all__ = ["MemoryService"]

log = logging.getLogger(__name__)

_MAX_QUERY_CHARS = 8_000  # a huge query is truncated, not refused: recall must not fail a chat
_IMPORT_BATCH = 512


class MemoryService:
    """The memory engine's facade. All methods are scoped by tenant (and user where given)."""

    def __init__(
        self,
        data_dir: Path,
        embedder: Embedder,
        *,
        store: MemoryStore | None = None,
        store_uri: str | None = None,
        peers: PeerFeed | None = None,
        outcome_feed: OutcomeFeed | None = None,
        stream: StreamConfig | None = None,
        refresh_s: float = 5.0,
        tokens: TokenCounter | None = None,
        redaction: RedactionPolicy = RedactionPolicy(),
        retention: RetentionPolicy = DEFAULT_RETENTION,
        weights: RecallWeights = RecallWeights(),
        prior: UsefulnessPrior = UsefulnessPrior(),
        max_content_chars: int = 32_000,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        near_duplicate: float = 0.95,
        max_k: int = 100,
        prune_interval_s: float | None = 600.0,
        prewarm_rows: int = 0,
    ) -> None:
        self._embedder = embedder
        # The tables may be shared (store_uri, peers); the write-ahead log is this host's.
        self._store: MemoryStore = store or LanceMemoryStore(
            store_uri or data_dir / "lancedb",
            model_id=embedder.model_id,
            dimension=embedder.dimension,
            peers=peers,
            refresh_s=refresh_s,
        )
        self._applier = BatchApplier(self._store, embedder, near_duplicate=near_duplicate)
        local = Ingestor(data_dir / "wal", self._applier)
        # With a shared stream, this host's write-ahead log is its fallback.
        self._stream = None if stream is None else StreamIngestor(stream, local, self._applier)
        self._ingest: Ingestion = self._stream or local
        self._tokens = tokens or TokenCounter()
        self._redaction = redaction
        self._retention = retention
        self._weights = weights
        self._prior = prior
        self._max_chars = max_content_chars
        self._chunk_tokens = chunk_tokens
        self._max_k = max_k
        self._prune_interval_s = prune_interval_s
        self._pruner = Pruner(
            self._store, retention=retention, prior=prior, interval_s=prune_interval_s or 0.0
        )
        self._outcomes = QuestionOutcomes()
        self._journal = OutcomeJournal(data_dir / "outcomes.jsonl", self._outcomes)
        self._outcome_feed = outcome_feed
        self._prewarm_rows = prewarm_rows
        self._prewarming: asyncio.Task[None] | None = None

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def writing(self) -> int:
        """Tenants whose shared ingestion stream this replica applies now (0 without one)."""
        return 0 if self._stream is None else self._stream.writer.writing

    async def start(self) -> None:
        await self._store.start()
        await self._ingest.start()
        if self._prune_interval_s is not None:
            self._pruner.start()
        try:
            replayed = await asyncio.to_thread(self._journal.open)
        except OSError as error:
            log.warning(
                "outcome journal unusable (%s): feedback per question lasts until restart", error
            )
        else:
            log.info(
                "outcome journal: %d lines replayed, %d questions", replayed, len(self._outcomes)
            )
        if self._outcome_feed is not None:
            self._outcome_feed.subscribe(self._heard)
        if self._prewarm_rows > 0:
            self._prewarming = asyncio.create_task(self._prewarm(), name="memshadow-prewarm")

    async def _prewarm(self) -> None:
        """Busy users' scopes into RAM after a start (see the store's ``prewarm``), while
        requests are already served: until it is done, a first recall loads its own scope."""
        started = time.monotonic()
        try:
            scopes, rows = await self._store.prewarm(self._prewarm_rows)
        except (OSError, RuntimeError, ValueError) as error:
            log.warning("prewarming scopes failed: %s", error)
            return
        log.info(
            "prewarmed %d scopes (%d memories) in %.1f s", scopes, rows, time.monotonic() - started
        )

    @property
    def cached_rows(self) -> int:
        """Memories held in the RAM search structures of cached scopes."""
        return self._store.cached_rows

    async def aclose(self) -> None:
        if self._prewarming is not None:
            self._prewarming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prewarming
        await self._pruner.aclose()
        await self._ingest.aclose()
        self._applier.close()
        await self._store.aclose()
        self._journal.close()

    async def prune(self, tenant: str) -> PruneReport:
        """One retention pass over the tenant now (the background loop does this too)."""
        await self._ingest.flush(tenant)
        return await self._pruner.run_once(tenant)

    # -- store -------------------------------------------------------------------------
    async def store(
        self, scope: Scope, items: Sequence[NewMemory | Mapping[str, Any]]
    ) -> list[Memory]:
        """Store memories; durable when this returns. Long items yield one memory per chunk."""
        parsed = [self._parse(i, item) for i, item in enumerate(items)]
        await self._store.open_tenant(scope.tenant)
        prepared = [m for item in parsed for m in self._prepare(scope, item)]
        hashes = [m.content_hash for m in prepared]
        stored = await self._store.by_hash(scope.tenant, scope.user, hashes)
        out: list[Memory] = []
        fresh: list[Memory] = []
        reinforce: list[str] = []
        for memory, existing in zip(prepared, stored, strict=True):
            existing = existing or self._ingest.pending_by_hash(
                scope.tenant, scope.user, memory.content_hash
            )
            if existing is None:
                existing = next((m for m in fresh if m.content_hash == memory.content_hash), None)
                if existing is None:
                    fresh.append(memory)
                    out.append(memory)
                    continue
            out.append(existing)
            reinforce.append(existing.id)
        await self._ingest.submit(scope.tenant, fresh)
        if reinforce:
            await self._ingest.flush(scope.tenant)
            await self._store.touch(scope.tenant, reinforce, reinforced=1)
        return out

    def _parse(self, index: int, item: NewMemory | Mapping[str, Any]) -> NewMemory:
        try:
            return parse_new_memory(item, max_chars=self._max_chars)
        except InvalidMemory as error:
            raise InvalidMemory(error.field, f"item {index}: {error.message}") from None

    def _prepare(self, scope: Scope, item: NewMemory) -> list[Memory]:
        redacted = redact(item.content, self._redaction)
        metadata = dict(item.metadata)
        if redacted.changed:
            metadata["redacted"] = redacted.counts
        chunks = chunk_text(redacted.text, self._chunk_tokens, self._tokens.count)
        created = item.created_at or utcnow()
        group = uuid.uuid4().hex
        out = []
        for n, chunk in enumerate(chunks):
            extra = (
                {"chunk": {"group": group, "index": n, "of": len(chunks)}}
                if len(chunks) > 1
                else {}
            )
            out.append(Memory(
                id=group if n == 0 else uuid.uuid4().hex, tenant=scope.tenant, user=scope.user,
                session=scope.session, tier=item.tier, source=item.source, content=chunk,
                tokens=self._tokens.count(chunk), content_hash=content_hash(chunk),
                created_at=created, last_used_at=created, metadata={**metadata, **extra},
            ))  # fmt: skip
        return out

    # -- recall ------------------------------------------------------------------------
    async def search(
        self,
        scope: Scope,
        query: str,
        *,
        k: int = 8,
        max_tokens: int | None = None,
        tiers: Iterable[Tier] | None = None,
        embed_as: str | None = None,
    ) -> RecallResult:
        """Hybrid recall in (tenant, user), and session when the scope has one.

        ``embed_as``: the text whose embedding stands for the query on the vector side (the
        keyword side and the confidence read ``query``); see
        :func:`memory.conversation.query_embedding_text`."""
        if not 1 <= k <= self._max_k:
            raise InvalidMemory("k", f"must be between 1 and {self._max_k}")
        if max_tokens is not None and max_tokens < 1:
            raise InvalidMemory("max_tokens", "must be positive")
        query = query.strip()[:_MAX_QUERY_CHARS]
        if not query:
            return RecallResult(items=[], confidence=0.0)
        pool = max(self._weights.candidate_pool, 2 * k)
        tier_set = frozenset(tiers) if tiers is not None else None
        embed, embedded = self._embedder.embed_batch, (embed_as or query)[:_MAX_QUERY_CHARS]
        # The store embeds the query in the same worker thread as the search: one hop.
        candidates = await self._store.candidates(
            scope.tenant, lambda: embed([embedded])[0], query,
            ScopeFilter(scope.user, scope.session, tier_set), pool,
        )  # fmt: skip
        question = question_key(query)
        result = rank(
            without_repeats(candidates, query), k=k, max_tokens=max_tokens, now=utcnow(),
            retention=self._retention, prior=self._prior, weights=self._weights, query=query,
            rejected=self._outcomes.rejected(scope.tenant, scope.user, question),
        )  # fmt: skip
        result.question = question
        return result

    # -- read and manage ---------------------------------------------------------------
    async def get(self, tenant: str, memory_id: str, *, user: str | None = None) -> Memory | None:
        """The memory, or None when it does not exist in this tenant (and user, if given)."""
        memory = self._ingest.pending(tenant, memory_id)
        if memory is None:
            found = await self._store.get(tenant, memory_id)
            memory = None if found is None else found[0]
        return None if memory is None or (user is not None and memory.user != user) else memory

    async def list_memories(
        self, tenant: str, *, user: str | None = None, session: str | None = None,
        tier: Tier | None = None, cursor: str | None = None, limit: int = 50,
    ) -> tuple[list[Memory], str | None]:  # fmt: skip
        """Live memories oldest first; pass the returned cursor back for the next page."""
        if not 1 <= limit <= 1000:
            raise InvalidMemory("limit", "must be between 1 and 1000")
        await self._ingest.flush(tenant)
        tiers = frozenset({tier}) if tier is not None else None
        page = await self._store.list_memories(
            tenant, ScopeFilter(user, session, tiers), cursor, limit
        )
        return page.items, page.next_cursor

    async def update(
        self, tenant: str, memory_id: str, *, user: str | None = None,
        content: str | None = None, metadata: dict[str, Any] | None = None,
        tier: Tier | None = None,
    ) -> Memory | None:  # fmt: skip
        """Change a memory in place (same id); new content is redacted and re-embedded."""
        await self._ingest.flush(tenant)
        found = await self._store.get(tenant, memory_id)
        if found is None or (user is not None and found[0].user != user):
            return None
        memory, vector = found[0], None  # re-embedded only when the content changes
        changes: dict[str, Any] = {}
        if tier is not None:
            changes["tier"] = Tier(tier)
        if metadata is not None:
            changes["metadata"] = metadata
        if content is not None:
            item = parse_new_memory({"content": content}, max_chars=self._max_chars)
            text = redact(item.content, self._redaction).text
            changes.update(
                content=text, content_hash=content_hash(text), tokens=self._tokens.count(text)
            )
            vector = (await asyncio.to_thread(self._embedder.embed_batch, [text]))[0]
        # Only the edited fields are written: forgotten meanwhile, it stays forgotten (None).
        revised = memory.model_copy(update=changes)
        return await self._store.revise(tenant, revised, vector)

    async def delete(self, tenant: str, memory_id: str, *, user: str | None = None) -> bool:
        if await self.get(tenant, memory_id, user=user) is None:
            return False
        await self._ingest.flush(tenant, everywhere=True)
        deleted = await self._store.delete(tenant, [memory_id]) > 0
        await self.compact(tenant)
        return deleted

    async def compact(self, tenant: str) -> None:
        """Compact the tenant's table, dropping its old versions and the applied write-ahead
        log: what removes forgotten memories from disk (forgets run it themselves)."""
        await self._ingest.flush(tenant)
        await self._ingest.rotate_log()
        await self._store.optimize(tenant, cleanup=True)

    async def forget_user(self, tenant: str, user: str) -> int:
        """Every memory of the user: gone from search at once, from disk after compaction."""
        check_scope_part("user", user)
        await self._ingest.flush(tenant, everywhere=True)
        removed = await self._store.delete_scope(tenant, user, None)
        await self._learn(Forgotten(tenant, user))
        await self.compact(tenant)
        return removed

    async def forget_tenant(self, tenant: str) -> int:
        """Every memory of every user of the tenant, and what feedback taught about them:
        the table is dropped (its files with it) once what was acknowledged is applied, and
        the applied write-ahead log is rotated away. Revoke the tenant's keys first, or a
        request still in flight may capture into a new table."""
        await self._ingest.flush(tenant, everywhere=True)
        removed = await self._store.drop_tenant(tenant)
        await self._learn(Forgotten(tenant, None))
        await self._ingest.rotate_log()
        return removed

    async def forget_session(self, tenant: str, user: str, session: str) -> int:
        check_scope_part("session", session)
        await self._ingest.flush(tenant, everywhere=True)
        removed = await self._store.delete_scope(tenant, user, session)
        await self.compact(tenant)
        return removed

    async def record_usefulness(
        self, tenant: str, ids: Sequence[str], feedback: bool | float,
        *, user: str | None = None, question: str = "",
    ) -> int:  # fmt: skip
        """Credit feedback (``useful`` bool or a score in [-1, 1]) to these memories.

        With the user and the key of the question they were injected for
        (:attr:`RecallResult.question`), the outcome is also kept for that question.
        """
        useful, not_useful = evidence(feedback)
        if user is not None and question:
            await self._learn(Verdict(tenant, user, question, tuple(ids), feedback))
        await self._ingest.flush(tenant)
        return await self._store.touch(tenant, list(ids), useful=useful, not_useful=not_useful)

    async def _learn(self, news: OutcomeNews) -> None:
        """Into this replica's book of per-question outcomes, and the other replicas'."""
        self._heard(news)
        if self._outcome_feed is not None:
            await self._outcome_feed.publish(news)

    def _heard(self, news: OutcomeNews) -> None:
        """An outcome learned here or by another replica: into the book and its journal."""
        self._outcomes.apply(news)
        self._journal.write(news)

    async def summary_input(
        self, tenant: str, user: str, session: str | None = None, *, limit: int = 200
    ) -> list[Memory]:
        """The newest live memories to summarise, oldest first; the proxy calls the LLM and
        stores the result with ``tier=semantic`` through :meth:`store`."""
        items: list[Memory] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.list_memories(
                tenant, user=user, session=session, cursor=cursor, limit=1000
            )
            items.extend(m for m in page if m.tier != Tier.SEMANTIC)
            if cursor is None:
                return items[-limit:]

    async def count_live(self, tenant: str) -> dict[Tier, int]:
        """The tenant's live memories per tier, as the store holds them now.

        It does not wait for ingestion (a status page must not): memories acknowledged but
        not yet applied are counted by :attr:`ingest_backlog` instead.
        """
        return await self._store.count_live(tenant)

    @property
    def ingest_backlog(self) -> int:
        """Acknowledged memories (in the write-ahead log or the stream) not applied yet."""
        return self._ingest.backlog

    # -- export and import -------------------------------------------------------------
    async def export(
        self, tenant: str, *, user: str | None = None, include_vectors: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """JSON-able records (one per memory, superseded ones included) for JSONL export."""
        await self._ingest.flush(tenant)
        scope = ScopeFilter(user, include_inactive=True)
        async for memory, vector in self._store.export(tenant, scope):
            record = memory.model_dump(mode="json", exclude={"tenant"})
            record["embedding_model"] = self._embedder.model_id
            if include_vectors:
                record["vector"] = [round(float(x), 7) for x in vector]
            yield record

    async def import_(self, tenant: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Restore exported records (ids kept; re-embedded unless the vector is usable).

        Records without an ``id`` are plain items (``user`` and ``content`` required).
        """
        await self._store.open_tenant(tenant)
        batch: list[tuple[Memory, list[float] | None]] = []
        count = 0
        for n, record in enumerate(records):
            batch.append(self._restore(tenant, n, record))
            if len(batch) >= _IMPORT_BATCH:
                count += await self._submit_restores(tenant, batch)
                batch = []
        count += await self._submit_restores(tenant, batch)
        await self._ingest.flush(tenant)  # an import is done when it is searchable
        return count

    def _restore(
        self, tenant: str, n: int, record: Mapping[str, Any]
    ) -> tuple[Memory, list[float] | None]:
        data = {k: v for k, v in record.items() if k not in ("vector", "embedding_model")}
        if "id" not in data:  # a plain item from elsewhere: fill in what an export carries
            if "user" not in data:
                raise InvalidMemory(f"records.{n}.user", "is required")
            item = self._parse(n, {k: v for k, v in data.items() if k != "user"})
            scope = Scope(tenant=tenant, user=str(data["user"]))
            data = self._prepare(scope, item.model_copy(update={"source": Source.IMPORT}))[
                0
            ].model_dump()
        try:
            memory = Memory.model_validate({**data, "tenant": tenant})
        except ValueError as error:
            raise InvalidMemory(f"records.{n}", str(error).splitlines()[0]) from None
        vector = record.get("vector")
        usable = (
            record.get("embedding_model") == self._embedder.model_id
            and isinstance(vector, list) and len(vector) == self._embedder.dimension
        )  # fmt: skip
        return memory, vector if usable else None

    async def _submit_restores(
        self, tenant: str, batch: list[tuple[Memory, list[float] | None]]
    ) -> int:
        if not batch:
            return 0
        # A batch missing any usable vector is re-embedded whole (the ingestor embeds then).
        vectors = None
        if all(v is not None for _, v in batch):
            vectors = np.asarray([v for _, v in batch], np.float32)
        await self._ingest.submit(tenant, [m for m, _ in batch], vectors, restore=True)
        return len(batch)
