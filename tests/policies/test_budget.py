"""Token budget and best-first packing."""

from __future__ import annotations

from policies.budget import Candidate, cut_at_sentence, memory_budget, pack


def words(text: str) -> int:
    return len(text.split())


def test_budget_is_capped_by_policy_and_by_the_room_left() -> None:
    assert (
        memory_budget(
            context_window=128_000,
            prompt_tokens=500,
            completion_reserve=1000,
            cap=1000,
            fraction=0.25,
        )
        == 1000
    )
    assert (
        memory_budget(
            context_window=4096, prompt_tokens=3000, completion_reserve=600, cap=1000, fraction=0.5
        )
        == 248
    )
    assert (
        memory_budget(
            context_window=4096, prompt_tokens=4000, completion_reserve=600, cap=1000, fraction=0.5
        )
        == 0
    )


def test_budget_never_overflows_the_window() -> None:
    for prompt in range(0, 5000, 37):
        for reserve in (0, 256, 1024):
            budget = memory_budget(
                context_window=4096,
                prompt_tokens=prompt,
                completion_reserve=reserve,
                cap=2000,
                fraction=1.0,
            )
            assert budget == 0 or prompt + reserve + budget <= 4096


def _c(name: str, text: str, score: float) -> Candidate:
    return Candidate(id=name, content=text, tokens=words(text), score=score)


def test_pack_is_best_first_and_skips_what_does_not_fit() -> None:
    big = _c("big", "word " * 50, 0.9)
    small = _c("small", "tiny fact here", 0.5)
    packed = pack([big, small], budget=20, count_tokens=words)
    assert [p.candidate.id for p in packed] == ["small"]


def test_pack_cuts_at_a_sentence_boundary_when_that_serves_better() -> None:
    sentences = " ".join(f"Sentence number {i} has exactly seven words." for i in range(10))
    long = _c("long", sentences, 0.9)
    packed = pack([long], budget=40, count_tokens=words)
    assert len(packed) == 1 and packed[0].truncated
    assert packed[0].content.endswith("words.")
    assert packed[0].tokens <= 40
    assert sum(p.tokens for p in packed) <= 40


def test_pack_respects_per_item_overhead() -> None:
    items = [_c(str(i), "one two three", 1.0 - i / 10) for i in range(5)]
    packed = pack(items, budget=20, count_tokens=words, per_item_overhead=2)
    assert len(packed) == 4  # 4 * (3 + 2) = 20


def test_cut_at_sentence_returns_none_when_nothing_fits() -> None:
    assert cut_at_sentence("A very long first sentence indeed.", 2, words) is None
