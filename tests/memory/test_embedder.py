"""The production embedder: the real bundled model, offline, plus the query cache.

The model is loaded once per module; the ONNX export lands in one session-wide tmp dir.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory.embedder import (
    BUNDLED_MODEL_ID,
    CachedEmbedder,
    Embedder,
    EmbedderLoadError,
    OnnxEmbedder,
    TorchEmbedder,
    Vectors,
    load_embedder,
    resolve_model,
)

# Varied on purpose: short and long, questions, code, other languages, one longer than
# 128 tokens so the comparison covers truncation at the reference's 256.
SENTENCES = [
    "what is my sister's name?",
    "My sister Alice lives in Lyon and works as a nurse.",
    "We use PostgreSQL 16 in production and SQLite for local tests.",
    "I am vegetarian and allergic to peanuts.",
    "🙂 sounds good, see you at 3pm",
    "def add(a, b):\n    return a + b",
    "J'habite à Montréal depuis 2019 et je travaille dans une startup.",
    "東京のオフィスは渋谷にあります。",
    "Error: connection refused (ECONNREFUSED) 127.0.0.1:6379",
    "Please summarise the meeting notes from yesterday in three bullet points.",
    "The on-call rotation changes every Monday at 09:00 UTC.",
    "Staging is deployed with `make deploy ENV=staging` from the release branch.",
    " ".join(["The deployment pipeline builds the image, runs the tests, and pushes it."] * 20),
]
# One- or two-token inputs are where int8 drifts most (cosine ~0.95-0.97 vs fp32).
FRAGMENTS = ["ok", "", "thanks!", "?"]
TEXTS = SENTENCES + FRAGMENTS


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def reference() -> TorchEmbedder:
    return TorchEmbedder(resolve_model(None), threads=2)


@pytest.fixture(scope="module")
def embedder(onnx_cache: Path) -> Embedder:
    """The production default, exactly as the app loads it."""
    return load_embedder(None, onnx_cache, 2)


def test_default_is_the_bundled_model_with_384_dimensions(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.model_id == BUNDLED_MODEL_ID
    assert embedder.dimension == 384
    vectors = embedder.embed_batch(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_batch(embedder: Embedder, reference: TorchEmbedder) -> None:
    assert embedder.embed_batch([]).shape == (0, 384)
    assert reference.embed_batch([]).shape == (0, 384)


def test_related_sentences_score_higher_than_unrelated(embedder: Embedder) -> None:
    query, related, unrelated = embedder.embed_batch(
        [
            "what food can't I eat?",
            "I am vegetarian and allergic to peanuts.",
            "The on-call rotation changes every Monday at 09:00 UTC.",
        ]
    )
    assert query @ related > query @ unrelated + 0.1


def test_fast_default_agrees_with_torch_reference(
    embedder: Embedder, reference: TorchEmbedder
) -> None:
    cosines = np.einsum("ij,ij->i", embedder.embed_batch(TEXTS), reference.embed_batch(TEXTS))
    assert cosines[: len(SENTENCES)].mean() >= 0.99
    assert cosines.min() >= 0.9


def test_onnx_fp32_matches_reference_exactly(onnx_cache: Path, reference: TorchEmbedder) -> None:
    fp32 = OnnxEmbedder(resolve_model(None), onnx_cache, threads=2, quantize=False)
    cosines = np.einsum("ij,ij->i", fp32.embed_batch(TEXTS), reference.embed_batch(TEXTS))
    assert cosines.min() >= 0.9999


def test_batch_order_and_padding_do_not_change_vectors(embedder: Embedder) -> None:
    """Rows come back in input order, and padding a text inside a batch is invisible."""
    batch = embedder.embed_batch(TEXTS)
    singles = np.vstack([embedder.embed_batch([text]) for text in reversed(TEXTS)])[::-1]
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_a_query_beside_a_running_batch_gets_the_vector_it_gets_alone(onnx_cache: Path) -> None:
    """A lone query runs on every core, one beside other work on one thread: same vectors."""
    onnx = OnnxEmbedder(resolve_model(None), onnx_cache, threads=2)
    alone = np.vstack([onnx.embed_batch([text]) for text in SENTENCES])
    stop = threading.Event()

    def keep_busy() -> None:
        while not stop.is_set():
            onnx.embed_batch(SENTENCES * 4)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        beside = np.vstack([onnx.embed_batch([text]) for text in SENTENCES])
    finally:
        stop.set()
        busy.join()
    np.testing.assert_allclose(beside, alone, atol=1e-5)


def test_export_is_cached_on_disk(onnx_cache: Path, embedder: Embedder) -> None:
    exported = list(onnx_cache.glob("*/model*.onnx"))
    assert {p.name for p in exported} >= {"model.int8.onnx"}
    assert not list(onnx_cache.glob("*/.export-*")), "temporary export dirs must be removed"


def test_export_without_cache_dir_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fast = load_embedder(None, None, 1, backend="onnx", query_cache_size=0)
    assert fast.embed_batch(["hello"]).shape == (1, 384)
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_export_keeps_the_toolchain_out_of_the_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(handler)
    try:
        fresh = load_embedder(None, tmp_path, 1, query_cache_size=0)  # the default: int8
        logging.getLogger("memshadow.test").info("ours still passes")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert fresh.embed_batch(["hello"]).shape == (1, 384)
    assert [r.getMessage() for r in seen] == ["ours still passes"]
    assert "Loading weights" not in capfd.readouterr().err


def test_missing_model_path_gives_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EmbedderLoadError, match="does not exist") as info:
        load_embedder(str(missing), tmp_path)
    assert str(missing) in str(info.value)


def test_directory_that_is_not_a_model_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderLoadError, match=r"missing config\.json, tokenizer\.json"):
        load_embedder(str(tmp_path), tmp_path)


def test_local_path_is_accepted(onnx_cache: Path) -> None:
    source = resolve_model(str(resolve_model(None).path))
    assert source.model_id == "model"  # the directory's name
    assert source.pooling == "mean"
    assert source.max_seq_length == 256


class CountingEmbedder:
    """A fake inner embedder that records every text it is asked to embed."""

    model_id = "counting"
    dimension = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.seen.extend(texts)
        rows = [[len(t), 1.0, 0.0, 0.0] for t in texts]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), 4)
        normed: Vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return normed


def test_cache_returns_identical_vector_without_recomputing() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, maxsize=8)
    first = cached.embed("hello")
    again = cached.embed("hello")
    assert again is first
    assert inner.seen == ["hello"]
    assert cached.cache_info().hits == 1
    np.testing.assert_array_equal(cached.embed_batch(["hello"])[0], first)
    assert inner.seen == ["hello"]


def test_cache_batch_computes_only_new_unique_texts() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, maxsize=8)
    cached.embed("a")
    vectors = cached.embed_batch(["a", "bb", "bb", "ccc"])
    assert inner.seen == ["a", "bb", "ccc"]
    np.testing.assert_array_equal(vectors, inner.embed_batch(["a", "bb", "bb", "ccc"]))
    assert cached.embed_batch([]).shape == (0, 4)


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, maxsize=2)
    cached.embed("a")
    cached.embed("b")
    cached.embed("a")  # a is now the most recent
    cached.embed("c")  # evicts b
    inner.seen.clear()
    cached.embed("a")
    cached.embed("b")
    assert inner.seen == ["b"]
    assert cached.cache_info().size == 2


def test_cached_peeks_without_computing_or_reordering() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, maxsize=2)
    a = cached.embed("a")
    cached.embed("b")
    found = cached.cached(["a", "zz"])
    assert list(found) == ["a"] and found["a"] is a and inner.seen == ["a", "b"]
    assert cached.cache_info().hits == 0
    cached.embed("c")  # "a" was peeked at, not used: still the least recent, evicted
    assert cached.cached(["a", "b", "c"]).keys() == {"b", "c"}


def test_cached_vectors_are_read_only() -> None:
    cached = CachedEmbedder(CountingEmbedder())
    with pytest.raises(ValueError, match="read-only"):
        cached.embed("x")[0] = 2.0


def test_cache_under_concurrent_threads() -> None:
    cached = CachedEmbedder(CountingEmbedder(), maxsize=16)
    texts = [f"text {i % 40}" for i in range(400)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for text in texts[offset:] + texts[:offset]:
                assert cached.embed(text).shape == (4,)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cached.cache_info().size <= 16


def test_load_embedder_wraps_in_cache_by_default(embedder: Embedder) -> None:
    assert isinstance(embedder, CachedEmbedder)
    assert isinstance(embedder.inner, OnnxEmbedder)
    vector = embedder.embed("a repeated query")
    assert embedder.embed("a repeated query") is vector
