"""RAM search structures for one (tenant, user) scope: a vector matrix and a BM25 index.

LanceDB is the durable store, but a filtered LanceDB vector search costs ~7 ms fixed and
~230 ms at 100k rows without an index; a normalised float32 matrix answers a 10k-row scope
in well under a millisecond. The store loads a scope lazily and applies its own writes here,
so the two never diverge within one process.

Rows are append-only: an update or removal marks the old row dead (``alive`` False) and an
update appends a new row. Once dead rows pass a third of the total, the index rebuilds itself.
Every public method takes the scope's lock: the writer thread and searches run concurrently.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memory.model import Memory, Tier
from memory.retrieval import time_windows
from memory.store import Candidates, Vectors

__all__ = ["ScopeIndex", "in_context", "stem", "terms"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_STOPWORDS = frozenset(
    "a about all also am an and any are as at be been but by can could did do does for from "
    "had has have he her his i if in into is it its me my no not of on or our she so than "
    "that the their them then there these they this to was we were what when where which "
    "who whom why will with would you your yours "
    # Question and auxiliary words: "how many", "what kind of", "did … go" carry no topic, and
    # a question is made of them ("How long has …" matched every "long time no see").
    "how many much kind type sort some other both each just get got go going went done "
    "doing having ever".split()
)
_TIER_CODE = {tier: code for code, tier in enumerate(Tier)}
_BM25_K1 = 1.2
# Memories are short and alike in length (a chat turn, a fact): length normalisation mostly
# punishes the turn that says more about the subject. 0.4 rather than the usual 0.75.
_BM25_B = 0.4
# A memory stored right after another of the same session, within this gap, continues the same
# exchange: a question and its answer, the turns of one imported conversation.
_NEIGHBOUR_GAP_S = 3600.0
# How many rows either side lend context (LoCoMo dev R@10: 1 → 74.6, 2 → 77.2).
_CONTEXT_REACH = 2
# When the query names a date, memories from around that date weigh this much more.
_DATED_BOOST = 0.5


def terms(text: str) -> list[str]:
    """BM25 terms: lowercase words without stopwords, reduced to a crude stem."""
    out = []
    for word in _WORD.findall(text.lower()):
        word = word.removesuffix("'s")
        if word in _STOPWORDS:
            continue
        out.append(stem(word))
    return out


_DOUBLED = re.compile(r"([b-df-hj-km-np-tv-z])\1$")


def stem(word: str) -> str:
    """A small English suffix stripper: "submitted", "submitting", "submits" → "submit".

    Not a linguist's stemmer: it only has to map a word's common inflections to one key,
    and it may map a few unrelated words together (BM25 tolerates that far better than
    missing "painted" for "painting"). A final ``e`` is dropped everywhere so that "make"
    and "making" meet at "mak". No ``-ly``: it takes "family" down with "really".
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if _DOUBLED.search(word) and not word.endswith(("ll", "ss", "zz")):
                word = word[:-1]
            break
    return word.removesuffix("e") if len(word) > 3 else word


@dataclass
class _Postings:
    rows: list[int]
    tfs: list[float]
    cached: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        if self.cached is None or len(self.cached[0]) != len(self.rows):
            self.cached = (np.asarray(self.rows, np.int64), np.asarray(self.tfs, np.float32))
        return self.cached


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

    @property
    def live_count(self) -> int:
        return self._live

    @property
    def rows(self) -> int:
        return self._n

    def upsert(self, memories: Sequence[Memory], vectors: Vectors) -> None:
        """Insert or replace memories by id (a replaced one is killed and re-appended)."""
        with self._lock:
            for memory, vector in zip(memories, vectors, strict=True):
                self._kill(memory.id)
                if memory.live:
                    self._append(memory, vector)
            self._maybe_rebuild()

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

    def _append(self, memory: Memory, vector: Vectors) -> None:
        if self._n == len(self._alive):
            self._grow(2 * self._n)
        row = self._n
        self._n += 1
        words = terms(memory.content)
        self._vectors[row] = vector
        self._alive[row] = True
        self._tier[row] = _TIER_CODE[memory.tier]
        self._created[row] = memory.created_at.timestamp()
        self._follows[row] = self._continues(row, memory)
        self._doc_len[row] = len(words)
        self._memories.append(memory)
        self._sessions.append(memory.session)
        self._row_of[memory.id] = row
        self._by_hash.setdefault(memory.content_hash, row)
        self._live += 1
        self._total_len += len(words)
        counts: dict[str, int] = {}
        for word in words:
            counts[word] = counts.get(word, 0) + 1
        for word, tf in counts.items():
            postings = self._postings.setdefault(word, _Postings([], []))
            postings.rows.append(row)
            postings.tfs.append(float(tf))

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

    def _maybe_rebuild(self) -> None:
        # Dead rows cost search time and skew BM25 document frequencies; rebuild past 1/3.
        dead = self._n - self._live
        if dead < 256 or dead * 3 < self._n:
            return
        rows = [i for i in range(self._n) if self._alive[i]]
        memories = [self._memories[i] for i in rows]
        vectors = self._vectors[rows].copy()
        self._reset(capacity=max(64, 2 * len(rows)))
        for memory, vector in zip(memories, vectors, strict=True):
            self._append(memory, vector)

    def by_hash(self, content_hash: str) -> Memory | None:
        with self._lock:
            row = self._by_hash.get(content_hash)
            return None if row is None else self._memories[row]

    def nearest(self, vector: Vectors, content_hash: str) -> tuple[Memory | None, float]:
        """The live memory with this exact content (similarity 1), else the most similar one."""
        with self._lock:
            row = self._by_hash.get(content_hash)
            if row is not None:
                return self._memories[row], 1.0
            if self._live == 0:
                return None, 0.0
            sims = self._vectors[: self._n] @ vector
            sims[~self._alive[: self._n]] = -np.inf
            best = int(np.argmax(sims))
            return self._memories[best], float(sims[best])

    def search(
        self,
        query_vector: Vectors,
        query_text: str,
        *,
        session: str | None,
        tiers: frozenset[Tier] | None,
        limit: int,
    ) -> Candidates:
        """Top ``limit`` by cosine and top ``limit`` by BM25 among the allowed live rows."""
        with self._lock:
            n = self._n
            allowed = self._allowed(session, tiers)
            searched = int(allowed.sum())
            if searched == 0 or limit <= 0:
                return Candidates(vectors=np.zeros((0, self._dimension), np.float32))
            sims, keyword = self._scores(query_vector, query_text, n)
            vector_top = _top(np.where(allowed, sims, -np.inf), min(limit, searched))
            keyword_top = _top(np.where(allowed & (keyword > 0), keyword, -np.inf), limit)
            rows = list(dict.fromkeys([*vector_top.tolist(), *keyword_top.tolist()]))
            return Candidates(
                memories=[self._memories[r] for r in rows],
                vectors=self._vectors[rows].copy(),
                vector_sim=sims[rows].astype(np.float32),
                keyword=keyword[rows].astype(np.float32),
                vector_rank=_ranks(rows, vector_top),
                keyword_rank=_ranks(rows, keyword_top),
                searched=searched,
            )

    def _scores(
        self, query_vector: Vectors, query_text: str, n: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Cosine and BM25 of every row, each in its context and weighted for named dates."""
        alive = self._alive[:n]
        link = self._follows[:n] & alive
        link[1:] &= alive[:-1]
        sims = in_context(self._vectors[:n] @ query_vector, link)
        keyword = in_context(self._bm25(query_text, n), link)
        dated = self._dated(query_text, n)
        if dated is not None:
            boost = np.float32(1.0 + _DATED_BOOST)
            sims = np.where(dated & (sims > 0), sims * boost, sims)
            keyword = np.where(dated, keyword * boost, keyword)
        return sims, keyword

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


def in_context(
    scores: npt.NDArray[np.float32], link: npt.NDArray[np.bool_], reach: int = _CONTEXT_REACH
) -> npt.NDArray[np.float32]:
    """Each row's score lifted towards better neighbours': halfway for the adjacent ones, a
    quarter of the way for those two rows off, and so on up to ``reach``.

    ``link[i]`` says row ``i`` continues row ``i - 1``; neighbours count only through an
    unbroken chain of links. A turn that only makes sense next to the one before it ("Yes,
    since last spring!") is found through its neighbour, and a topic discussed over several
    turns outranks a word that happens to occur once. A row never scores above its best
    neighbour, so the scores keep their scale (cosine stays cosine).
    """
    out = scores.astype(np.float32, copy=True)
    chained = link.copy()  # chained[i]: rows i - distance … i are one exchange
    for distance in range(1, reach + 1):
        if distance > 1:
            chained[distance - 1 :] &= link[: len(link) - distance + 1]
            chained[: distance - 1] = False
        neighbour = np.full_like(out, -np.inf)
        neighbour[distance:] = np.where(chained[distance:], scores[:-distance], -np.inf)
        neighbour[:-distance] = np.maximum(
            neighbour[:-distance], np.where(chained[distance:], scores[distance:], -np.inf)
        )
        out = np.where(neighbour > out, out + (neighbour - out) * 0.5**distance, out)
    return out.astype(np.float32)


def _top(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best finite scores, best first."""
    finite = int(np.isfinite(scores).sum())
    k = min(k, finite)
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def _ranks(rows: list[int], top: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    position = {int(row): rank for rank, row in enumerate(top.tolist())}
    return np.asarray([position.get(row, -1) for row in rows], np.int32)
