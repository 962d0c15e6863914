"""Applying acknowledged memories to the store: the one pipeline every ingestion path uses.

Per batch: embed (one ``embed_batch`` call) → near-duplicate check against the user's live
memories (cosine ≥ ``near_duplicate``: the new row is kept, marked superseded by the
survivor, which is reinforced; the acknowledged id stays resolvable) → supersession →
upsert. Exact duplicates are near-duplicates at similarity 1. Earlier live memories of
the same batch count as survivors too: two stores of one text, or of near-duplicate texts,
that no replica saw as duplicates when it acknowledged them (two replicas, or one batch)
end as one live memory, reinforced.

Supersession (:mod:`policies.supersession`): a live memory stating a profile fact ("I moved
to Porto") supersedes the user's strictly older live memories stating another value for the
same slot ("I live in Lyon"), which are kept with ``superseded_by`` and leave search; a fact
older than a stored contradicting one (an import) is itself the one superseded. Only the
user's memories whose content contains the slot's trigger phrases are read, through one
filtered store query per (tenant, user) in a batch that states any fact. Two texts that
contradict each other on a slot are never near-duplicates of each other, however similar.

A batch is applied in two steps, :meth:`BatchApplier.prepare` (embedding and the reads)
then :meth:`BatchApplier.commit` (the writes), so that a writer that may lose its right to
write while it embeds (the stream writer's lease) can check that right between the two.
Applying is idempotent: rows are upserted by id (appended only when the caller promises
they are not stored yet), so an entry applied twice is still one row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memory.embedder import CachedEmbedder, Embedder
from memory.model import Memory
from memory.priority import background_executor
from memory.store import Change, MemoryStore, Vectors
from policies.supersession import Claim, Fact, Supersession, extract_fact, resolve, triggers

__all__ = ["BatchApplier", "Plan", "Write"]

events = logging.getLogger("memshadow.events")


@dataclass(frozen=True, slots=True)
class Write:
    """One acknowledged memory to apply.

    ``vector`` is set for restores that bring their own embedding. ``fresh`` promises the
    id is not in the store yet (a first attempt at a new memory), which allows a plain
    append instead of an upsert.
    """

    tenant: str
    memory: Memory
    vector: list[float] | None = None
    restore: bool = False
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class _Group:
    """What committing one (tenant, user) part of a batch writes."""

    tenant: str
    memories: list[Memory]
    vectors: Vectors
    reinforce: list[str]
    outcome: dict[str, Supersession]
    new: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """A prepared batch: embedded and checked, nothing written yet."""

    groups: list[_Group]

    @property
    def count(self) -> int:
        return sum(len(group.memories) for group in self.groups)

    def of(self, tenant: str) -> Plan:
        """The part of the batch that writes ``tenant``'s table."""
        return Plan([group for group in self.groups if group.tenant == tenant])


class BatchApplier:
    """Embeds, deduplicates, resolves supersession and writes batches of memories."""

    def __init__(self, store: MemoryStore, embedder: Embedder, *, near_duplicate: float) -> None:
        self._store = store
        # Memories are embedded past the query cache (they would only evict queries), but
        # take what it already holds: a captured user turn was embedded, as that very text,
        # by the recall of its own request (memory.conversation.query_embedding_text).
        self._cache = embedder if isinstance(embedder, CachedEmbedder) else None
        self._embedder = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
        self._near_duplicate = near_duplicate
        self._background = background_executor("memshadow-ingest-embed")

    def close(self) -> None:
        """Stop the embedding thread (after the ingestion that feeds it has stopped)."""
        self._background.shutdown(wait=True)

    async def apply(self, batch: Sequence[Write]) -> None:
        await self.commit(await self.prepare(batch))

    async def prepare(self, batch: Sequence[Write]) -> Plan:
        """Embed the batch and decide, per (tenant, user), what to write."""
        # One write per id, the last, as if applied one after another: Lance would insert
        # a repeated id twice, and then refuse every later upsert matching both rows.
        batch = list({(w.tenant, w.memory.id): w for w in batch}.values())
        vectors = await self._vectors(batch)
        rows_of: dict[tuple[str, str], list[int]] = {}
        for i, write in enumerate(batch):
            rows_of.setdefault((write.tenant, write.memory.user), []).append(i)
        groups = []
        for (tenant, user), rows in rows_of.items():
            groups.append(await self._plan_group(tenant, user, [batch[i] for i in rows],
                                                 vectors[rows]))  # fmt: skip
        return Plan(groups)

    async def _plan_group(
        self, tenant: str, user: str, writes: list[Write], vectors: Vectors
    ) -> _Group:
        memories = [w.memory for w in writes]
        fresh = [i for i, w in enumerate(writes) if not w.restore]
        hashes = np.array([memories[i].content_hash for i in fresh], dtype=object)
        survivors = await self._store.nearest(tenant, user, vectors[fresh], list(hashes))
        reinforce: list[str] = []
        # Stores that race into one batch were never seen by each other when acknowledged:
        # an earlier live memory of the batch is as much a survivor as a stored one, unless
        # both are chunks of one document (its parts are alike, and all were asked for).
        similar = vectors[fresh] @ vectors[fresh].T
        similar[hashes[:, None] == hashes[None, :]] = 1.0  # exact, not 0.9999999
        documents = np.array([_document(memories[i]) for i in fresh], dtype=object)
        chunked = np.array([d is not None for d in documents], dtype=bool)
        same_document = (documents[:, None] == documents[None, :]) & chunked
        live = np.ones(len(fresh), dtype=bool)
        for k, (i, (survivor, similarity)) in enumerate(zip(fresh, survivors, strict=True)):
            if k:
                earlier = np.where(live[:k] & ~same_document[k, :k], similar[k, :k], -np.inf)
                best = int(np.argmax(earlier))
                if earlier[best] > similarity:
                    survivor, similarity = memories[fresh[best]], float(earlier[best])
            if (
                survivor is not None
                and survivor.id != memories[i].id
                and (similarity >= self._near_duplicate)
                and not _contradict(survivor, memories[i])
            ):
                memories[i] = memories[i].model_copy(update={"superseded_by": survivor.id})
                reinforce.append(survivor.id)
                live[k] = False
        outcome = await self._supersessions(tenant, user, memories)
        in_batch = {m.id: i for i, m in enumerate(memories)}
        for old, change in outcome.items():
            if old in in_batch:
                i = in_batch[old]
                memories[i] = memories[i].model_copy(update={"superseded_by": change.new})
        new = all(w.fresh and not w.restore for w in writes)
        return _Group(tenant, memories, vectors, reinforce, outcome, new)

    async def commit(self, plan: Plan) -> None:
        """Write a prepared batch: the memories, then what they reinforce and supersede."""
        for group in plan.groups:
            await self._store.add(group.tenant, group.memories, group.vectors, new=group.new)
            if group.reinforce:
                await self._store.touch(group.tenant, group.reinforce, reinforced=1)
            await self._apply_supersessions(
                group.tenant, group.outcome, {m.id for m in group.memories}
            )

    async def _supersessions(
        self, tenant: str, user: str, memories: Sequence[Memory]
    ) -> dict[str, Supersession]:
        """Which memories (of this batch or stored) the batch's stated facts supersede."""
        claims = _claims(memories)
        if not claims:
            return {}
        phrases = sorted({t for c in claims for t in triggers(c.fact.slot)})
        batch_ids = {m.id for m in memories}
        stored = await self._store.matching(tenant, user, phrases)
        known = _claims([m for m in stored if m.id not in batch_ids])
        outcome: dict[str, Supersession] = {}
        # Oldest first, so that within one batch the newest statement ends up the live one.
        for claim in sorted(claims, key=lambda c: (c.created_at, c.id)):
            if claim.id in outcome:
                continue
            live = [c for c in known if c.id not in outcome]
            outcome.update((s.old, s) for s in resolve(claim, live))
            known.append(claim)
        return outcome

    async def _apply_supersessions(
        self, tenant: str, outcome: dict[str, Supersession], in_batch: set[str]
    ) -> None:
        # Stored memories are marked after the new one is written: for a moment both are
        # live, rather than neither; a crash in between replays the entry and marks again.
        stored = {
            old: Change(superseded_by=s.new) for old, s in outcome.items() if old not in in_batch
        }
        changed = set(await self._store.mark(tenant, stored)) if stored else set()
        for old, s in outcome.items():
            if old in in_batch or old in changed:
                events.info(
                    "memory superseded tenant=%s id=%s by=%s slot=%s", tenant, old, s.new, s.slot,
                    extra={"event": "memory.superseded", "tenant": tenant, "memory_id": old,
                           "superseded_by": s.new, "slot": s.slot},
                )  # fmt: skip

    async def _vectors(self, batch: Sequence[Write]) -> Vectors:
        out = np.zeros((len(batch), self._store.dimension), np.float32)
        todo = [i for i, write in enumerate(batch) if write.vector is None]
        for i, write in enumerate(batch):
            if write.vector is not None:
                out[i] = write.vector
        cached = self._cache.cached([batch[i].memory.content for i in todo]) if self._cache else {}
        for i in todo:
            vector = cached.get(batch[i].memory.content)
            if vector is not None:
                out[i] = vector
        todo = [i for i in todo if batch[i].memory.content not in cached]
        if todo:
            texts = [batch[i].memory.content for i in todo]
            # At background priority: a backlog of captures must not slow the recalls.
            loop = asyncio.get_running_loop()
            embed = self._embedder.embed_batch
            out[todo] = await loop.run_in_executor(self._background, embed, texts)
        return out


def _fact(memory: Memory) -> Fact | None:
    role = memory.metadata.get("role")
    return extract_fact(memory.content, role if isinstance(role, str) else None)


def _claims(memories: Sequence[Memory]) -> list[Claim]:
    """The profile facts that live memories state."""
    out = []
    for memory in memories:
        fact = _fact(memory) if memory.live else None
        if fact is not None:
            out.append(Claim(memory.id, fact, memory.created_at))
    return out


def _document(memory: Memory) -> str | None:
    """The document a chunk was cut from (``memory.service`` marks chunks), else None."""
    chunk = memory.metadata.get("chunk")
    return str(chunk["group"]) if isinstance(chunk, dict) and "group" in chunk else None


def _contradict(a: Memory, b: Memory) -> bool:
    """Whether two memories state different values for one slot ("live in Lyon"/"in Porto")."""
    fa, fb = _fact(a), _fact(b)
    return fa is not None and fb is not None and fa.slot == fb.slot and fa.value != fb.value
