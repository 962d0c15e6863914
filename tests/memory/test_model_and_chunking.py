from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memory.chunking import chunk_text, split_sentences
from memory.model import InvalidMemory, NewMemory, Scope, Tier, parse_new_memory


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 101}, "content"),
        ({"content": "ok", "tier": "forever"}, "tier"),
        ({"content": "ok", "created_at": "yesterday-ish"}, "created_at"),
        (
            {"content": "ok", "created_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()},
            "created_at",
        ),
        ({"content": "ok", "colour": "red"}, "colour"),
        ({}, "content"),
    ],
)
def test_invalid_items_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(InvalidMemory) as caught:
        parse_new_memory(raw, max_chars=100)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_past_timestamps_are_kept_and_naive_means_utc() -> None:
    item = parse_new_memory({"content": "x", "created_at": "2001-02-03T04:05:06"}, max_chars=10)
    assert item.created_at == datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert NewMemory(content="x").tier is Tier.LONG_TERM


@pytest.mark.parametrize(("tenant", "user"), [("", "u"), ("t", ""), ("t", " "), ("t", "u" * 300)])
def test_scope_rejects_empty_or_huge_parts(tenant: str, user: str) -> None:
    with pytest.raises(InvalidMemory):
        Scope(tenant=tenant, user=user)


def test_split_sentences() -> None:
    assert split_sentences("One. Two! Three? Four") == ["One.", "Two!", "Three?", "Four"]


def test_short_text_is_one_chunk(tokens) -> None:
    assert chunk_text("  Just one line.  ", 50, tokens.count) == ["Just one line."]


def test_chunks_end_at_sentence_boundaries_and_fit(tokens) -> None:
    sentences = [f"Fact number {i} concerns the topic of item {i}." for i in range(60)]
    chunks = chunk_text(" ".join(sentences), 40, tokens.count)
    assert len(chunks) > 1
    assert all(tokens.count(c) <= 40 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks) == " ".join(sentences)  # nothing lost or reordered


def test_oversized_sentence_and_blob_are_split(tokens) -> None:
    long_sentence = " ".join(["word"] * 500)
    blob = "Q" * 3000
    for text in (long_sentence, blob):
        chunks = chunk_text(text, 64, tokens.count)
        assert all(tokens.count(c) <= 64 for c in chunks)
        assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
