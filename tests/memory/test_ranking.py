from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from memory.index import ScopeIndex
from memory.model import Memory, Source, Tier, content_hash
from memory.retrieval import rank
from memory.terms import terms
from memory.usefulness import UsefulnessPrior, evidence, posterior_mean
from tests.fakes import FakeEmbedder

NOW = datetime(2025, 1, 1, tzinfo=UTC)
EMB = FakeEmbedder(64)


def memory(
    i: int,
    content: str,
    *,
    tier: Tier = Tier.LONG_TERM,
    age: timedelta = timedelta(0),
    useful: float = 0.0,
    not_useful: float = 0.0,
    tokens: int = 10,
) -> Memory:
    return Memory(
        id=f"m{i}",
        tenant="t",
        user="u",
        tier=tier,
        source=Source.API,
        content=content,
        tokens=tokens,
        content_hash=content_hash(content),
        created_at=NOW - age,
        last_used_at=NOW - age,
        useful=useful,
        not_useful=not_useful,
    )


def index_of(memories: list[Memory]) -> ScopeIndex:
    index = ScopeIndex(EMB.dimension)
    index.upsert(memories, EMB.embed_batch([m.content for m in memories]))
    return index


def recall(index: ScopeIndex, query: str, k: int = 5, **kw):
    cands = index.search(EMB.embed_batch([query])[0], query, session=None, tiers=None, limit=50)
    return rank(cands, k=k, max_tokens=kw.pop("max_tokens", None), now=NOW, **kw)


def test_terms_drop_stopwords_and_plurals() -> None:
    assert terms("The cats' owner's Dogs and glass") == ["cat", "owner", "dog", "glass"]


def test_bm25_prefers_rare_terms() -> None:
    index = index_of(
        [
            memory(0, "project zephyr launches"),
            *[memory(i, f"project meeting {i}") for i in range(1, 30)],
        ]
    )
    result = recall(index, "zephyr project")
    assert result.items[0].memory.id == "m0"
    assert result.items[0].keyword > max(i.keyword for i in result.items[1:])


def test_mmr_keeps_copies_of_one_fact_out_of_the_top() -> None:
    copies = [memory(i, "the wifi password is swordfish") for i in range(8)]
    other = memory(99, "the wifi router sits in the hall closet")
    result = recall(index_of([*copies, other]), "wifi password router", k=2)
    assert {i.memory.id for i in result.items} & {"m99"}


def test_recency_and_usefulness_break_ties() -> None:
    old = memory(1, "standup is at nine", tier=Tier.EPISODIC, age=timedelta(days=60))
    new = memory(2, "standup is at nine", tier=Tier.EPISODIC)
    result = recall(
        index_of([old, new]),
        "standup nine",
        k=2,
        weights=__import__("memory.retrieval").retrieval.RecallWeights(mmr_lambda=1.0),
    )
    assert [i.memory.id for i in result.items] == ["m2", "m1"]
    liked = memory(3, "lunch is at noon", useful=9)
    # Two failures: sinks, but too little evidence to be dropped (see the usefulness floor).
    disliked = memory(4, "lunch is at noon", not_useful=2)
    result = recall(
        index_of([disliked, liked]),
        "lunch noon",
        k=2,
        weights=__import__("memory.retrieval").retrieval.RecallWeights(mmr_lambda=1.0),
    )
    assert [i.memory.id for i in result.items] == ["m3", "m4"]


def test_token_budget_is_respected() -> None:
    memories = [memory(i, f"fact {i} about budgets", tokens=40) for i in range(10)]
    result = recall(index_of(memories), "budgets", k=10, max_tokens=100)
    assert len(result.items) == 2
    assert sum(i.memory.tokens for i in result.items) <= 100


def test_confidence_is_bounded_and_higher_on_topic() -> None:
    index = index_of([memory(i, f"alice likes {x}") for i, x in enumerate(["tea", "jazz", "cats"])])
    on_topic = recall(index, "alice likes jazz").confidence
    off_topic = recall(index, "quarterly revenue forecast spreadsheet").confidence
    assert 0.0 <= off_topic < on_topic <= 1.0


def test_dead_rows_vanish_and_index_rebuilds() -> None:
    index = index_of([memory(i, f"note {i} text") for i in range(600)])
    assert index.remove([f"m{i}" for i in range(400)]) == 400
    assert index.live_count == 200 and index.rows == 200  # rebuilt past a third dead
    result = recall(index, "note 5 text", k=50)
    assert all(int(i.memory.id[1:]) >= 400 for i in result.items)


def test_usefulness_posterior() -> None:
    prior = UsefulnessPrior()
    assert posterior_mean(0, 0, prior) == 0.5
    assert posterior_mean(*evidence(True), prior) > 0.5 > posterior_mean(*evidence(False), prior)
    assert evidence(0.0) == (0.5, 0.5) and evidence(5.0) == (1.0, 0.0)
    assert np.isclose(posterior_mean(10, 0, prior), 12 / 14)


def test_each_candidate_decays_by_its_own_tier_and_age() -> None:
    from policies.retention import DEFAULT_RETENTION, decay

    ages = {Tier.WORKING: timedelta(hours=5), Tier.EPISODIC: timedelta(days=20),
            Tier.SEMANTIC: timedelta(days=400), Tier.LONG_TERM: timedelta(days=900)}  # fmt: skip
    memories = [
        memory(i, f"the garden shed key note {i}", tier=tier, age=age)
        for i, (tier, age) in enumerate([*ages.items(), *ages.items()])
    ]
    result = recall(index_of(memories), "garden shed key", k=8)
    assert len(result.items) == 8
    for item in result.items:
        age = (NOW - item.memory.created_at).total_seconds()
        expected = decay(age, DEFAULT_RETENTION.for_tier(item.memory.tier.value))
        assert np.isclose(item.recency, float(expected), rtol=1e-9)


def test_a_memory_too_long_for_the_budget_leaves_room_for_a_shorter_one() -> None:
    long = memory(1, "passport renewal office opens at nine passport", tokens=90)
    short = memory(2, "passport renewal needs two photos", tokens=30)
    shorter = memory(3, "renewal of the car insurance is in May", tokens=20)
    result = recall(index_of([long, short, shorter]), "passport renewal", k=3, max_tokens=60)
    assert [i.memory.id for i in result.items][:1] == ["m2"]
    assert "m1" not in {i.memory.id for i in result.items}
    assert sum(i.memory.tokens for i in result.items) <= 60


def test_usefulness_is_the_same_elementwise_as_one_by_one() -> None:
    prior = UsefulnessPrior()
    useful, not_useful = np.array([0.0, 1.0, 2.5, -1.0]), np.array([0.0, 3.0, 0.5, 2.0])
    means = posterior_mean(useful, not_useful, prior)
    assert means.tolist() == [posterior_mean(float(u), float(n), prior)
                              for u, n in zip(useful, not_useful, strict=True)]  # fmt: skip
