"""RAM search structures for one (tenant, user) scope: a vector matrix and a BM25 index.

LanceDB is the durable store, but a filtered LanceDB vector search costs ~7 ms fixed and
~230 ms at 100k rows without an index; a normalised float32 matrix answers a 10k-row scope
in well under a millisecond. The store loads a scope lazily and applies its own writes here,
so the two never diverge within one process.

Rows are append-only: an update or removal marks the old row dead (``alive`` False) and an
update appends a new row. Once dead rows pass a third of the total, the index rebuilds itself.
Every public method takes the scope's lock: the tenant's writer and searches run concurrently.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

from memory.context import CONTEXT_REACH, DATED_BOOST, around, lift
from memory.model import Memory, Tier
from memory.retrieval import time_windows
from memory.scan import dots, scan, top
from memory.store import Candidates, Vectors
from memory.terms import terms

__all__ = ["ScopeIndex"]

_TIER_CODE = {tier: code for code, tier in enumerate(Tier)}
_BM25_K1 = 1.2
# Memories are short and alike in length (a chat turn, a fact): length normalisation mostly
# punishes the turn that says more about the subject. 0.4 rather than the usual 0.75.
_BM25_B = 0.4
# A memory stored right after another of the same session, within this gap, continues the same
# exchange: a question and its answer, the turns of one imported conversation.
_NEIGHBOUR_GAP_S = 3600.0
# Scopes above this many rows get a binary first pass: the float matrix of 100k rows is 150 MB
# and a scan of it is memory-bandwidth bound (16-24 ms on the shared 2-core box). Sign bits of
# the centred vectors (48 bytes a row) rank every row by Hamming distance, then the best
# ``PREFILTER_SHORTLIST`` rows, their context neighbours and the BM25 top are scored exactly.
PREFILTER_MIN_ROWS = 20_000
PREFILTER_SHORTLIST = 1_000
# Hamming distance ranks only coarsely: the Hamming top PREFILTER_CANDIDATES are scored exactly
# and the best PREFILTER_SHORTLIST kept. 100k single user, vector recall@10 vs exhaustive with
# the same scoring: Hamming top 1,000 alone 0.91 (derived vectors) / 0.71 (real ones against
# out-of-domain questions), p50 5.1-6.6 ms; top 4,000 refined 0.99 / 0.91, 6.1-6.8 ms. A
# scope of 1M needs a wider net (derived vectors: 4,000 -> 0.93, 10,000 -> 0.96, 16,000 ->
# 0.975), hence at least 1% of the rows.
PREFILTER_CANDIDATES = 4_000
PREFILTER_CANDIDATE_SHARE = 0.01


class _Postings:
    """One term's rows and term frequencies in growable preallocated arrays (appends are
    amortised O(1); a search reads views, never rebuilds arrays from lists)."""

    __slots__ = ("_n", "_rows", "_tfs")

    def __init__(self) -> None:
        self._n = 0
        self._rows = np.empty(4, np.int64)
        self._tfs = np.empty(4, np.float32)

    def extend(self, rows: npt.NDArray[np.int64], tfs: npt.NDArray[np.int64]) -> None:
        end = self._n + len(rows)
        if end > len(self._rows):
            capacity = max(end, 2 * len(self._rows))
            self._rows = np.resize(self._rows, capacity)
            self._tfs = np.resize(self._tfs, capacity)
        self._rows[self._n : end] = rows
        self._tfs[self._n : end] = tfs
        self._n = end

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        return self._rows[: self._n], self._tfs[: self._n]


class ScopeIndex:
    """Vectors + BM25 over one user's memories, with per-row tier/session/time for filters."""

    def __init__(self, dimension: int) -> None:
        self._lock = threading.Lock()
        self._dimension = dimension
        self._reset(capacity=64)

    def _reset(self, capacity: int) -> None:
        self._n = 0
        self._vectors = np.zeros((capacity, self._dimension), np.float32)
        self._alive = np.zeros(capacity, bool)
        self._tier = np.zeros(capacity, np.int8)
        self._created = np.zeros(capacity, np.float64)
        self._follows = np.zeros(capacity, bool)
        self._doc_len = np.zeros(capacity, np.float32)
        self._memories: list[Memory] = []
        self._sessions: list[str | None] = []
        self._row_of: dict[str, int] = {}
        self._by_hash: dict[str, int] = {}
        self._postings: dict[str, _Postings] = {}
        self._live = 0
        self._total_len = 0.0
        self._bits: npt.NDArray[np.uint64] | None = None  # built when first needed
        self._center: npt.NDArray[np.float32] | None = None

    @property
    def live_count(self) -> int:
        return self._live

    @property
    def rows(self) -> int:
        return self._n

    def upsert(self, memories: Sequence[Memory], vectors: Vectors) -> None:
        """Insert or replace memories by id.

        A memory whose text, session and date are unchanged (feedback, reinforcement, a tier
        change) is updated in its row: re-appending it would cut it off from its neighbouring
        turns, and neighbour context is part of its recall. Anything else is re-appended.
        """
        with self._lock:
            appended = []
            for memory, vector in zip(memories, vectors, strict=True):
                if self._update_in_place(memory):
                    continue
                self._kill(memory.id)
                if memory.live:
                    appended.append((self._append(memory, vector), memory))
            self._index_terms(appended)
            self._maybe_rebuild()

    def _update_in_place(self, memory: Memory) -> bool:
        row = self._row_of.get(memory.id)
        if row is None or not memory.live:
            return False
        old = self._memories[row]
        same = (old.content_hash, old.session, old.created_at) == (
            memory.content_hash,
            memory.session,
            memory.created_at,
        )
        if same:
            self._memories[row] = memory
            self._tier[row] = _TIER_CODE[memory.tier]
        return same

    def remove(self, ids: Iterable[str]) -> int:
        with self._lock:
            removed = sum(self._kill(memory_id) for memory_id in ids)
            self._maybe_rebuild()
            return removed

    def remove_session(self, session: str) -> int:
        with self._lock:
            ids = [
                m.id
                for i, m in enumerate(self._memories)
                if self._alive[i] and m.session == session
            ]
            return sum(self._kill(memory_id) for memory_id in ids)

    def get(self, memory_id: str) -> Memory | None:
        with self._lock:
            row = self._row_of.get(memory_id)
            return None if row is None else self._memories[row]

    def _kill(self, memory_id: str) -> bool:
        row = self._row_of.pop(memory_id, None)
        if row is None:
            return False
        memory = self._memories[row]
        self._alive[row] = False
        if self._by_hash.get(memory.content_hash) == row:
            del self._by_hash[memory.content_hash]
        self._live -= 1
        self._total_len -= float(self._doc_len[row])
        return True

    def _append(self, memory: Memory, vector: Vectors) -> int:
        """A new row for ``memory``, its terms not yet indexed (:meth:`_index_terms`)."""
        if self._n == len(self._alive):
            self._grow(2 * self._n)
        row = self._n
        self._n += 1
        self._vectors[row] = vector
        if self._bits is not None:
            self._bits[:, row] = self._signs(np.asarray(vector, np.float32)[None, :])[0]
        self._alive[row] = True
        self._tier[row] = _TIER_CODE[memory.tier]
        self._created[row] = memory.created_at.timestamp()
        self._follows[row] = self._continues(row, memory)
        self._memories.append(memory)
        self._sessions.append(memory.session)
        self._row_of[memory.id] = row
        self._by_hash.setdefault(memory.content_hash, row)
        self._live += 1
        return row

    def _index_terms(self, appended: Sequence[tuple[int, Memory]]) -> None:
        """BM25 postings and lengths of freshly appended rows, grouped by term in numpy and
        extended once per term: a scope load adds ~25 terms a row, and growing each term's
        arrays row by row made indexing a 10k-row scope cost ~1.1 s of CPU (now ~0.45 s)."""
        words: list[str] = []
        rows: list[int] = []
        tfs: list[int] = []
        for row, memory in appended:
            found = terms(memory.content)
            counts, length = Counter(found), len(found)
            self._doc_len[row] = length
            # A row replaced later in the same batch was killed before it had a length.
            if self._alive[row]:
                self._total_len += length
            words.extend(counts)
            tfs.extend(counts.values())
            rows.extend([row] * len(counts))
        if not words:
            return
        vocabulary: dict[str, int] = {}
        codes = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in words), np.int64)
        order = np.argsort(codes, kind="stable")  # stable: each term's rows stay ascending
        bounds = [0, *(np.flatnonzero(np.diff(codes[order])) + 1).tolist(), len(order)]
        row_array, tf_array = np.asarray(rows, np.int64)[order], np.asarray(tfs)[order]
        for code, word in enumerate(vocabulary):  # codes ascend in the vocabulary's order
            start, stop = bounds[code], bounds[code + 1]
            postings = self._postings.get(word)
            if postings is None:
                postings = self._postings[word] = _Postings()
            postings.extend(row_array[start:stop], tf_array[start:stop])

    def _continues(self, row: int, memory: Memory) -> bool:
        """Whether this memory was stored right after the previous row, in the same exchange."""
        if row == 0 or not self._alive[row - 1]:
            return False
        gap = abs(self._created[row] - self._created[row - 1])
        return self._sessions[row - 1] == memory.session and gap <= _NEIGHBOUR_GAP_S

    def _grow(self, capacity: int) -> None:
        def grown(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            out = np.zeros((capacity, *array.shape[1:]), array.dtype)
            out[: self._n] = array[: self._n]
            return out

        self._vectors = grown(self._vectors).astype(np.float32, copy=False)
        self._alive = grown(self._alive).astype(bool, copy=False)
        self._tier = grown(self._tier).astype(np.int8, copy=False)
        self._created = grown(self._created).astype(np.float64, copy=False)
        self._follows = grown(self._follows).astype(bool, copy=False)
        self._doc_len = grown(self._doc_len).astype(np.float32, copy=False)
        if self._bits is not None:
            bits = np.zeros((self._bits.shape[0], capacity), np.uint64)
            bits[:, : self._n] = self._bits[:, : self._n]
            self._bits = bits

    def _maybe_rebuild(self) -> None:
        # Dead rows cost search time and skew BM25 document frequencies; rebuild past 1/3.
        dead = self._n - self._live
        if dead < 256 or dead * 3 < self._n:
            return
        rows = [i for i in range(self._n) if self._alive[i]]
        memories = [self._memories[i] for i in rows]
        vectors = self._vectors[rows].copy()
        self._reset(capacity=max(64, 2 * len(rows)))
        self._index_terms([(self._append(m, v), m) for m, v in zip(memories, vectors, strict=True)])

    def by_hash(self, content_hash: str) -> Memory | None:
        with self._lock:
            row = self._by_hash.get(content_hash)
            return None if row is None else self._memories[row]

    def nearest(self, vectors: Vectors, hashes: Sequence[str]) -> list[tuple[Memory | None, float]]:
        """Per vector: the live memory with this exact content (similarity 1), else the most
        similar one. One matrix product for the whole batch."""
        with self._lock:
            out: list[tuple[Memory | None, float]] = [(None, 0.0)] * len(hashes)
            todo: list[int] = []
            for i, content_hash in enumerate(hashes):
                row = self._by_hash.get(content_hash)
                if row is not None:
                    out[i] = (self._memories[row], 1.0)
                else:
                    todo.append(i)
            if not todo or self._live == 0:
                return out
            n = self._n
            dead = ~self._alive[:n]
            queries = np.asarray(vectors, np.float32)
            for start in range(0, len(todo), 256):
                chunk = todo[start : start + 256]
                sims = self._vectors[:n] @ queries[chunk].T  # (n, len(chunk))
                sims[dead] = -np.inf
                best = np.argmax(sims, axis=0)
                for j, i in enumerate(chunk):
                    out[i] = (self._memories[int(best[j])], float(sims[best[j], j]))
            return out

    def search(
        self,
        query_vector: Vectors,
        query_text: str,
        *,
        session: str | None,
        tiers: frozenset[Tier] | None,
        limit: int,
        exact: bool = False,
        helper: Executor | None = None,
    ) -> Candidates:
        """Top ``limit`` by cosine and top ``limit`` by BM25 among the allowed live rows,
        each score lifted by its context (:func:`memory.context.in_context`). ``helper``: an
        executor whose idle thread may share the cosine scan (see :func:`memory.scan.scan`).

        The lift runs only around the rows that can reach a top ``limit`` (see
        :meth:`_reachable`), not over the whole scope: the same result, without a dozen
        passes over every row. Scopes of more than ``PREFILTER_MIN_ROWS`` rows score cosine
        exactly only for a binary shortlist (see ``PREFILTER_SHORTLIST``) unless ``exact``.
        """
        with self._lock:
            n = self._n
            allowed = self._allowed(session, tiers)
            searched = int(allowed.sum())
            if searched == 0 or limit <= 0:
                return Candidates(vectors=np.zeros((0, self._dimension), np.float32))
            link = self._links(n)
            dated = self._dated(query_text, n)
            bm25 = self._bm25(query_text, n)
            keyword_core = self._reachable(bm25, allowed, limit, dated, positive=True)
            if exact or n <= PREFILTER_MIN_ROWS or searched <= PREFILTER_SHORTLIST:
                cosine = scan(self._vectors, n, query_vector, helper)
                core = np.union1d(self._reachable(cosine, allowed, limit, dated), keyword_core)
                scored = around(core, 2 * CONTEXT_REACH, n)
                sims = lift(cosine[scored], link, scored, dated)
                keyword = lift(bm25[scored], link, scored, dated)
                usable = np.flatnonzero(allowed[scored])
                vector_top = scored[usable[top(sims[usable], min(limit, searched))]]
                matched = usable[keyword[usable] > 0]
                keyword_top = scored[matched[top(keyword[matched], limit)]]
                rows = _merged(vector_top, keyword_top)
                at = np.searchsorted(scored, rows)
                vector_sim, keyword_score = sims[at], keyword[at]
            else:
                scored = around(keyword_core, 2 * CONTEXT_REACH, n)
                keyword = lift(bm25[scored], link, scored, dated)
                matched = np.flatnonzero(allowed[scored] & (keyword > 0))
                keyword_top = scored[matched[top(keyword[matched], limit)]]
                # Only the shortlisted rows and their neighbours are scored: the context lift
                # runs on them alone (a row outside them can lift nothing).
                shortlist = self._prefiltered(query_vector, allowed, keyword_top, n)
                cosine = dots(self._vectors, shortlist, query_vector)
                sims = lift(cosine, link, shortlist, dated)
                usable = np.flatnonzero(allowed[shortlist])
                vector_top = shortlist[usable[top(sims[usable], min(limit, searched))]]
                rows = _merged(vector_top, keyword_top)
                vector_sim = sims[np.searchsorted(shortlist, rows)]
                # BM25 of the vector top, lifted exactly around every returned row.
                neighbourhood = around(rows, 2 * CONTEXT_REACH, n)
                keyword = lift(bm25[neighbourhood], link, neighbourhood, dated)
                keyword_score = keyword[np.searchsorted(neighbourhood, rows)]
            row_list = rows.tolist()
            return Candidates(
                memories=[self._memories[r] for r in row_list],
                vectors=self._vectors[rows],
                vector_sim=vector_sim.astype(np.float32),
                keyword=keyword_score.astype(np.float32),
                vector_rank=_ranks(row_list, vector_top),
                keyword_rank=_ranks(row_list, keyword_top),
                created=self._created[rows],
                searched=searched,
            )

    def _reachable(
        self,
        raw: npt.NDArray[np.float32],
        allowed: npt.NDArray[np.bool_],
        limit: int,
        dated: npt.NDArray[np.bool_] | None,
        *,
        positive: bool = False,
    ) -> npt.NDArray[np.int64]:
        """The rows whose context can reach the top ``limit`` once lifted.

        A lifted score is at least the row's own score and at most the best raw score
        within ``CONTEXT_REACH`` of it (times the date boost). So with ``T`` the
        ``limit``-th best allowed raw score (boosted), a row whose neighbourhood holds no
        raw score of at least ``T / boost`` cannot make the top; the rows returned are
        those that reach it, and the top lies within ``CONTEXT_REACH`` of them. With
        ``positive``, only rows scoring above 0 count (BM25: a lift from nothing is 0).
        """
        if positive:
            # Most BM25 scores are 0: work on the few positive rows only (selecting among
            # many equal values is slow too: np.partition took 8 ms over 100k rows).
            hits = np.flatnonzero(raw > 0)
            rows = hits[allowed[hits]]
        else:
            hits, rows = None, np.flatnonzero(allowed)
        values = raw[rows]
        if dated is not None:
            values = np.where(dated[rows] & (values > 0), values * (1.0 + DATED_BOOST), values)
        if len(values) <= limit:
            return hits if hits is not None else np.arange(len(raw))
        floor = float(np.partition(values, len(values) - limit)[len(values) - limit])
        if dated is not None and floor > 0:
            floor /= 1.0 + DATED_BOOST
        floor -= 1e-6 * (1.0 + abs(floor))  # float32 rounding of the boost must not drop a tie
        if hits is not None:
            return hits[raw[hits] >= floor]
        return np.flatnonzero(raw >= floor)

    def _links(self, n: int) -> npt.NDArray[np.bool_]:
        alive = self._alive[:n]
        link = self._follows[:n] & alive
        link[1:] &= alive[:-1]
        return link

    def _signs(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
        assert self._center is not None
        bits = np.packbits(vectors > self._center, axis=1)
        pad = -bits.shape[1] % 8
        if pad:
            bits = np.pad(bits, ((0, 0), (0, pad)))
        return np.ascontiguousarray(bits).view(np.uint64)

    def _prefiltered(
        self,
        query_vector: Vectors,
        allowed: npt.NDArray[np.bool_],
        keyword_top: npt.NDArray[np.int64],
        n: int,
    ) -> npt.NDArray[np.int64]:
        """The rows to score exactly, ascending: the Hamming shortlist, the BM25 top and
        their context neighbours."""
        if self._bits is None:
            # Centring makes the sign bits informative (MiniLM's dimensions have non-zero
            # means); the centre is fixed once, later rows use it too. Stored word-major:
            # one contiguous array per 64 dimensions (6 cheap passes, no strided reduction).
            self._center = self._vectors[:n][self._alive[:n]].mean(axis=0).astype(np.float32)
            packed = self._signs(self._vectors[:n])
            bits = np.zeros((packed.shape[1], len(self._alive)), np.uint64)
            bits[:, :n] = packed.T
            self._bits = bits
        query = np.asarray(query_vector, np.float32)
        signs = self._signs(query[None, :])[0]
        distance = np.bitwise_count(self._bits[0, :n] ^ signs[0]).astype(np.uint16)
        for word in range(1, len(signs)):
            distance += np.bitwise_count(self._bits[word, :n] ^ signs[word])
        distance[~allowed] = np.iinfo(np.uint16).max
        # Hamming ranks are coarse: every row at least as close as the ``wanted``-th
        # (ties kept) is scored exactly, and the best PREFILTER_SHORTLIST of them stay.
        counts = np.cumsum(np.bincount(distance, minlength=1))
        wanted = max(PREFILTER_CANDIDATES, int(PREFILTER_CANDIDATE_SHARE * n))
        cut = int(np.searchsorted(counts, wanted))
        near = np.flatnonzero(distance <= cut)
        if len(near) > PREFILTER_SHORTLIST:
            cosine = dots(self._vectors, near, query)
            near = near[np.argpartition(-cosine, PREFILTER_SHORTLIST - 1)[:PREFILTER_SHORTLIST]]
        return around(np.concatenate([near, keyword_top]), CONTEXT_REACH, n)

    def _dated(self, query_text: str, n: int) -> npt.NDArray[np.bool_] | None:
        """Rows created inside a time window the query names, or None when it names none."""
        windows = time_windows(query_text)
        if not windows:
            return None
        created = self._created[:n]
        inside = np.zeros(n, bool)
        for start, end in windows:
            inside |= (created >= start) & (created < end)
        return inside

    def _allowed(self, session: str | None, tiers: frozenset[Tier] | None) -> npt.NDArray[np.bool_]:
        allowed = self._alive[: self._n].copy()
        if tiers is not None:
            allowed &= np.isin(self._tier[: self._n], [_TIER_CODE[t] for t in tiers])
        if session is not None:
            allowed &= np.fromiter((s == session for s in self._sessions), bool, self._n)
        return allowed

    def _bm25(self, query_text: str, n: int) -> npt.NDArray[np.float32]:
        scores = np.zeros(n, np.float32)
        if self._live == 0:
            return scores
        avg_len = max(self._total_len / self._live, 1.0)
        for word in set(terms(query_text)):
            postings = self._postings.get(word)
            if postings is None:
                continue
            rows, tfs = postings.arrays()
            df = len(rows)
            idf = math.log(1.0 + (self._live - df + 0.5) / (df + 0.5))
            norm = _BM25_K1 * (1.0 - _BM25_B + _BM25_B * self._doc_len[rows] / avg_len)
            scores[rows] += idf * tfs * (_BM25_K1 + 1.0) / (tfs + norm)
        return scores


def _merged(first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Rows of ``first`` then those of ``second`` not already in it, in order."""
    return np.asarray(list(dict.fromkeys([*first.tolist(), *second.tolist()])), np.int64)


def _ranks(rows: list[int], top: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    position = {int(row): rank for rank, row in enumerate(top.tolist())}
    return np.asarray([position.get(row, -1) for row in rows], np.int32)
