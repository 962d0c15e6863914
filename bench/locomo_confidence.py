"""LoCoMo confidence: does X-Memory-Confidence predict that the evidence reaches the upstream?

Prints figures; it is a benchmark, never a test (issue 5, "Measured"). Same data and write path
as :mod:`bench.locomo_recall` and :mod:`bench.locomo_inject` (the dev split is read from
``../shared/data/locomo``, never copied). Every question of categories 1-5 is sent through
``POST /v1/chat/completions`` with ``X-Memory-Mode: read`` (questions are not captured) and a
fresh ``X-Memory-Session`` each (so no question reads as a regenerate or a correction of the
one before). The tenant's policy sets ``confidence_threshold`` 0, so everything that has
candidates is injected and its confidence is visible, and a generous ``recall_deadline_ms``
(this measures confidence, not latency: a degraded recall would carry no confidence).

    .venv/bin/python -m bench.locomo_confidence                    # real MiniLM, ~3 minutes
    .venv/bin/python -m bench.locomo_confidence --embedder fake    # smoke run

Label: at least one evidence turn is among the injected memories (receipt ids mapped to
turns); for category 5 (adversarial, nothing true in memory) an injection never helps.
Reported:

- per category: AUROC of the confidence for that label (goal ≥ 0.80 on 1-4) and ECE over 10
  equal-width bins (goal ≤ 0.05), abstention and injected-evidence recall at the default
  threshold (``MemoryPolicy.confidence_threshold``) and at 0; the reliability diagram;
- a threshold sweep: the share of category 5 that abstains against the abstentions and the
  injected-evidence recall of categories 1-4. Before any feedback the proxy's rule is exactly
  ``confidence >= threshold``, so this is read off the same run;
- calibration through the product: all questions split 50/50 (fixed seed); each first-half
  completion gets ``POST /v1/feedback`` with ``useful`` = its label; the bins are read back
  from ``GET /v1/calibration`` and the proxy's own mapping (``policies.calibration``) is
  applied to the second half. Calibration is per population, so the 1-4 rows are also
  calibrated on the first half's 1-4 outcomes alone (same maths, outside the server). Then
  the default threshold those outcomes adapt to, and what the second half would inject under
  the product's rule after that feedback.

The confidence is :func:`policies.confidence.confidence` over the features
:func:`memory.retrieval.confidence_features` measures; its coefficients are fitted and
cross-checked by :mod:`bench.confidence_fit` (which gives the held-out figures: the ones this
prints are in-sample). Last runs (real MiniLM):

- before issue 5's model (0.65·similarity + 0.25·agreement + 0.10·margin): AUROC 0.65, ECE
  0.061 raw / 0.033 calibrated, category 5 abstained 0% (its confidence was as high as that
  of answerable questions);
- the retrieval features alone, with the query reaching ``rank``: AUROC 0.821-0.848 (1-4),
  category 5 still 0%;
- now (misattribution, several people, coverage of known words; fixed coefficients): 1-4
  AUROC 0.825 / 0.832, ECE 0.037 / 0.034; category 5 abstains 42.8% / 42.2% at 0.2 while 1-4
  abstain 2.1% and their injected-evidence recall goes 83.4% -> 82.1% / 83.2% -> 81.9%; sweep
  of the second run 0.3: 49.7%, 0.5: 55.5% (recall 80.3%). Calibrated second half: ECE 0.052
  (1-5, through the endpoint), 0.062 (1-4 on 1-4); the threshold stays 0.20 and 50.5% of the
  second half's category 5 abstains.

An adversarial question mostly names the wrong person ("What did Caroline realise after her
charity race?" when Melanie ran it), and retrieval finds Melanie's turn all the same. A first
attribution penalty (the named person is not the speaker of the best candidates) abstained on
30% of categories 1-4 for half of category 5, because the other speaker's questions and
replies echo the words ("How was your race?"); :mod:`memory.attribution` compares the best
*statements* of each speaker instead.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import nan
from pathlib import Path
from typing import Any

import httpx

from bench.locomo_inject import MODEL, next_answer
from bench.locomo_recall import (
    CATEGORIES,
    DEFAULT_DATA,
    REPO,
    Conversation,
    Question,
    Stored,
    checked,
    ingest,
    load,
    load_embedder,
    serve,
)

ALL_CATEGORIES = {**CATEGORIES, 5: "adversarial"}
BINS = 10
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def _policy_default(field: str) -> float:
    from policies.decision import MemoryPolicy

    return float(getattr(MemoryPolicy(), field))


THRESHOLD = _policy_default("confidence_threshold")
TARGET_PRECISION = _policy_default("target_precision")


# ------------------------------------------------------------------------------ data


def load_all(path: Path) -> list[Conversation]:
    """The conversations with categories 1-4 (evidence) and the adversarial category 5 too."""
    import orjson

    from bench.locomo_recall import evidence_ids

    conversations = load(path)
    raw = {entry["sample_id"]: entry for entry in orjson.loads(path.read_bytes())}
    out = []
    for conversation in conversations:
        adversarial = [
            Question(qa["question"], evidence_ids(qa.get("evidence", [])), 5)
            for qa in raw[conversation.sample_id]["qa"]
            if int(qa["category"]) == 5
        ]
        out.append(
            Conversation(
                conversation.sample_id, conversation.turns, [*conversation.questions, *adversarial]
            )
        )
    return out


# ------------------------------------------------------------------------------ the app


@dataclass
class Asked:
    """One question through chat: what the proxy said and what reached the upstream."""

    question: Question
    completion_id: str
    status: str
    confidence: float | None
    memory_ids: list[str] = field(default_factory=list)  # injected, receipt order
    turns: dict[str, set[str]] = field(default_factory=dict)  # memory id → dia ids
    tokens: float = 0.0

    @property
    def injected_turns(self) -> set[str]:
        return set().union(*self.turns.values()) if self.turns else set()

    @property
    def label(self) -> bool:
        return bool(self.injected_turns & self.question.evidence)

    @property
    def recall(self) -> float:
        evidence = self.question.evidence
        return len(self.injected_turns & evidence) / len(evidence) if evidence else 0.0

    def evidence_memories(self) -> list[str]:
        return [m for m in self.memory_ids if self.turns[m] & self.question.evidence]


async def ask_chat(
    client: httpx.AsyncClient, upstream: Any, stored: Stored, question: Question
) -> Asked:
    completion_id = next_answer(upstream)
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question.text}]},
        headers={
            "x-memory-user": stored.user,
            "x-memory-mode": "read",
            "x-memory-session": f"q-{uuid.uuid4().hex}",  # no regenerate/correction signals
        },
    )
    checked(response)
    status = response.headers.get("x-memory-status", "?")
    raw = response.headers.get("x-memory-confidence")
    asked = Asked(question, completion_id, status, float(raw) if raw is not None else None)
    asked.tokens = float(response.headers.get("x-memory-tokens", 0))
    if status == "ok":
        receipt = checked(await client.get(f"/v1/receipts/{completion_id}"))
        for memory in receipt["memories"]:
            asked.memory_ids.append(memory["id"])
            asked.turns[memory["id"]] = stored.dia_ids(memory["id"])
    return asked


# ------------------------------------------------------------------------------ maths


def ece(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ECE over 10 equal-width bins, with the product's own binning and formula."""
    from policies.calibration import Calibration, expected_calibration_error, observe

    calibration = Calibration()
    for score, label in zip(scores, labels, strict=True):
        calibration = observe(calibration, score, label)
    return expected_calibration_error(calibration)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    from policies.calibration import auroc as product_auroc

    return product_auroc(scores, labels)


def calibration_from_endpoint(body: dict[str, Any]) -> Any:
    """Rebuild the tenant's :class:`Calibration` from ``GET /v1/calibration``."""
    from policies.calibration import Bin, Calibration

    return Calibration(
        tuple(
            Bin(b["count"], b["useful_rate"] * b["count"], b["mean_confidence"] * b["count"])
            for b in body["bins"]
        )
    )


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x == x else "n/a"


def num(x: float) -> str:
    return f"{x:.3f}" if x == x else "n/a"


# ------------------------------------------------------------------------------ the run


def useful(a: Asked) -> bool:
    """The outcome a user would report: evidence injected; never for category 5 (no answer)."""
    return a.label and a.question.category in CATEGORIES


def conf(a: Asked) -> float:
    return a.confidence if a.confidence is not None else 0.0


def split(asked: list[Asked], seed: int) -> tuple[list[Asked], list[Asked]]:
    """50/50 (fixed seed) over every question, adversarial ones included."""
    order = list(range(len(asked)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return [asked[i] for i in order[:half]], [asked[i] for i in order[half:]]


async def run(args: argparse.Namespace) -> None:
    from tests.conftest import LoopbackServer
    from tests.fakes import FakeUpstream

    conversations = load_all(args.data)[: args.limit or None]
    started = time.perf_counter()
    embedder = load_embedder(args.embedder)
    upstream = FakeUpstream()
    policy = {"confidence_threshold": 0.0, "recall_deadline_ms": args.deadline_ms}
    asked: list[Asked] = []
    with LoopbackServer(upstream.asgi()) as server:
        async with serve(embedder, f"{server.url}/v1", policy) as client:
            for conversation in conversations:
                stored = await ingest(client, conversation)
                print(
                    f"{conversation.sample_id}: {len(conversation.turns)} turns stored, "
                    f"{len(conversation.questions)} questions"
                )
                for question in conversation.questions:
                    asked.append(await ask_chat(client, upstream, stored, question))
            first, second = split(asked, args.seed)
            fed = 0
            for a in first:  # the first half teaches the tenant's calibration
                if a.status != "ok" or a.confidence is None:
                    continue  # no receipt: nothing the product could be told about
                checked(
                    await client.post(
                        "/v1/feedback", json={"completion_id": a.completion_id, "useful": useful(a)}
                    )
                )
                fed += 1
            endpoint = checked(await client.get("/v1/calibration"))
    book = calibration_from_endpoint(endpoint)
    print(f"\nLoCoMo confidence, POST /v1/chat/completions, threshold 0 ({args.embedder} embedder)")
    print_categories(asked)
    print_reliability([a for a in asked if a.question.category in CATEGORIES])
    print_sweep(asked)
    print_calibration(args, first, second, book, endpoint, fed)
    statuses = Counter(a.status for a in asked)
    total = sum(statuses.values())
    print(
        "\nX-Memory-Status: "
        + ", ".join(f"{s} {n} ({100 * n / total:.1f}%)" for s, n in statuses.most_common())
    )
    print_goals(asked, first, second, book)
    print(f"wall time {time.perf_counter() - started:.1f} s")


def print_categories(asked: list[Asked]) -> None:
    header = (
        f"{'category':<16}{'n':>5}{'label+':>9}{'mean conf':>11}{'AUROC':>8}{'ECE':>8}"
        f"{f'abst@{THRESHOLD}':>10}{'recall@0':>10}{f'recall@{THRESHOLD}':>12}"
    )
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, list[Asked]]] = [
        (f"{c} {name}", [a for a in asked if a.question.category == c])
        for c, name in ALL_CATEGORIES.items()
    ]
    rows.append(("overall 1-4", [a for a in asked if a.question.category in CATEGORIES]))
    for label, group in rows:
        if not group:
            continue
        scores = [conf(a) for a in group]
        abstain = statistics.fmean(a.status != "ok" or conf(a) < THRESHOLD for a in group)
        if label.startswith("5 "):
            cells = ["n/a", num(statistics.fmean(scores)), "n/a", "n/a", pct(abstain), "n/a", "n/a"]
        else:
            labels = [a.label for a in group]
            cells = [
                pct(statistics.fmean(labels)),
                num(statistics.fmean(scores)),
                num(auroc(scores, labels)),
                num(ece(scores, labels)),
                pct(abstain),
                pct(statistics.fmean(a.recall for a in group)),
                pct(statistics.fmean(a.recall if conf(a) >= THRESHOLD else 0.0 for a in group)),
            ]
        widths = [9, 11, 8, 8, 10, 10, 12]
        print(
            f"{label:<16}{len(group):>5}"
            + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )


def print_reliability(scored: list[Asked]) -> None:
    print("\nReliability of the raw confidence, categories 1-4 (10 bins)")
    print(f"{'bin':<12}{'n':>6}{'mean conf':>11}{'useful':>9}")
    for i in range(BINS):
        members = [a for a in scored if min(BINS - 1, int(conf(a) * BINS)) == i]
        if members:
            print(
                f"{i / BINS:.1f}-{(i + 1) / BINS:.1f}{'':<5}{len(members):>6}"
                f"{statistics.fmean(conf(a) for a in members):>11.3f}"
                f"{pct(statistics.fmean(a.label for a in members)):>9}"
            )


def print_sweep(asked: list[Asked]) -> None:
    """What each threshold would abstain on, and the injected-evidence recall it keeps."""
    scored = [a for a in asked if a.question.category in CATEGORIES]
    adversarial = [conf(a) for a in asked if a.question.category == 5]
    answerable = [conf(a) for a in scored]
    if adversarial:
        separation = auroc(
            [*answerable, *adversarial], [True] * len(answerable) + [False] * len(adversarial)
        )
        print(f"\nCategory 5 vs 1-4: AUROC of the confidence for 'answerable' {num(separation)}")
    print(f"{'threshold':>10}{'cat-5 abstains':>16}{'1-4 abstain':>13}{'1-4 injected recall':>21}")
    for threshold in SWEEP:
        kept = statistics.fmean(a.recall if conf(a) >= threshold else 0.0 for a in scored)
        caught = statistics.fmean(c < threshold for c in adversarial) if adversarial else nan
        print(
            f"{threshold:>10.1f}{pct(caught):>16}"
            f"{pct(statistics.fmean(c < threshold for c in answerable)):>13}{pct(kept):>21}"
        )


def answerable(group: list[Asked]) -> list[Asked]:
    return [a for a in group if a.question.category in CATEGORIES]


def calibration_of(group: list[Asked]) -> Any:
    """The calibration the product would learn from these outcomes (its own pure maths)."""
    from policies.calibration import Calibration, observe

    book = Calibration()
    for a in group:
        if a.status == "ok" and a.confidence is not None:
            book = observe(book, a.confidence, useful(a))
    return book


def calibrated_rows(first: list[Asked], second: list[Asked], book: Any) -> list[Any]:
    """(name, second-half members, the calibration mapping them or None), per population."""
    return [
        ("1-4, raw", answerable(second), None),
        (
            "1-4, calibrated on first-half 1-4",
            answerable(second),
            calibration_of(answerable(first)),
        ),
        ("1-5, raw", second, None),
        ("1-5, calibrated on first half (endpoint)", second, book),
    ]


def print_calibration(
    args: argparse.Namespace, first: list[Asked], second: list[Asked], book: Any,
    endpoint: dict[str, Any], fed: int,
) -> None:  # fmt: skip
    from policies.calibration import adapted_threshold, calibrated

    print(
        f"\nCalibration: 50/50 split of categories 1-5 (seed {args.seed}); {fed} first-half "
        "outcomes fed through POST /v1/feedback (useful = evidence injected, never for "
        "category 5). Calibration is per population: the 1-4 rows are also calibrated on the "
        "first half's 1-4 outcomes alone, with the same maths, outside the server."
    )
    print(f"{'second half':<44}{'n':>5}{'AUROC':>8}{'ECE':>8}")
    for name, members, mapping in calibrated_rows(first, second, book):
        scores = [calibrated(mapping, conf(a)) if mapping else conf(a) for a in members]
        labels = [useful(a) for a in members]
        print(
            f"{name:<44}{len(members):>5}{num(auroc(scores, labels)):>8}"
            f"{num(ece(scores, labels)):>8}"
        )
    threshold = adapted_threshold(book, TARGET_PRECISION, THRESHOLD)
    print(
        f"GET /v1/calibration: outcomes {endpoint['outcomes']:.0f}, ECE (in-sample) "
        f"{endpoint['expected_calibration_error']:.4f}; the default policy's threshold after "
        f"these outcomes: {threshold:.2f} (from {THRESHOLD}, target precision {TARGET_PRECISION})"
    )
    inject = {id(a): calibrated(book, conf(a)) >= threshold for a in second}
    scored, adversarial = answerable(second), [a for a in second if a.question.category == 5]
    print(
        f"second half under the product's rule after feedback (calibrated >= {threshold:.2f}): "
        f"cat-5 abstains {pct(statistics.fmean(not inject[id(a)] for a in adversarial))}, "
        f"1-4 abstain {pct(statistics.fmean(not inject[id(a)] for a in scored))}, "
        f"1-4 injected recall {pct(statistics.fmean(a.recall * inject[id(a)] for a in scored))}"
        f" (at threshold 0: {pct(statistics.fmean(a.recall for a in scored))})"
    )


def print_goals(asked: list[Asked], first: list[Asked], second: list[Asked], book: Any) -> None:
    from policies.calibration import calibrated

    scored = answerable(asked)
    overall = [conf(a) for a in scored]
    labels = [a.label for a in scored]
    value, raw = auroc(overall, labels), ece(overall, labels)
    print("\nGoals (the shipped coefficients were fitted on this split, so these are in-sample;")
    print("bench/confidence_fit.py gives the estimate held out by conversation):")
    print(f"  AUROC >= 0.80 (1-4): raw {num(value)} {'MET' if value >= 0.80 else 'MISSED'}")
    print(f"  ECE <= 0.05: raw (1-4) {num(raw)} {'MET' if raw <= 0.05 else 'MISSED'}", end="")
    for name, members, mapping in calibrated_rows(first, second, book)[1::2]:
        scores = [calibrated(mapping, conf(a)) for a in members]
        value = ece(scores, [useful(a) for a in members])
        print(f"; second half {name} {num(value)} {'MET' if value <= 0.05 else 'MISSED'}", end="")
    print()
    adversarial = [a for a in asked if a.question.category == 5]
    if adversarial:
        share = statistics.fmean(conf(a) < THRESHOLD for a in adversarial)
        print(
            f"  category 5 mostly abstains at the default threshold {THRESHOLD}: {pct(share)} "
            f"{'MET' if share > 0.5 else 'MISSED'}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--embedder", choices=["real", "fake"], default="real")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    parser.add_argument("--seed", type=int, default=5, help="seed of the 50/50 split")
    parser.add_argument(
        "--deadline-ms",
        type=float,
        default=10_000.0,
        help="tenant recall_deadline_ms (no degraded recalls)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    asyncio.run(run(parse_args()))
