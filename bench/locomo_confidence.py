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

Label (categories 1-4): at least one evidence turn is among the injected memories (receipt ids
mapped to turns). Reported:

- AUROC of the confidence for that label (goal ≥ 0.80) and ECE over 10 equal-width bins
  (goal ≤ 0.05), raw, per category and overall;
- calibration through the product: the questions are split 50/50 (fixed seed); each
  first-half completion gets ``POST /v1/feedback`` with ``useful`` = its label (the tenant's
  calibration learns from it); the bins are then read back from ``GET /v1/calibration`` and
  the same mapping the proxy applies (``policies.calibration.calibrated``) is applied to the
  second half's raw confidences; AUROC and ECE on the second half, raw vs calibrated;
- at the default threshold 0.2: abstention rate of category 5 (adversarial, nothing true in
  memory) against abstention and injected-evidence recall on categories 1-4 (at threshold 0
  vs 0.2). Before any feedback the proxy's rule is exactly ``confidence >= threshold``, so
  this is read off the same run.

The confidence is :func:`policies.confidence.confidence` over the features
:func:`memory.retrieval.confidence_features` measures; its coefficients are refitted and
cross-checked by :mod:`bench.confidence_fit`. Last runs (real MiniLM, categories 1-4):

- before (0.65·similarity + 0.25·agreement + 0.10·margin): AUROC 0.65, ECE 0.061 raw /
  0.033 calibrated;
- now, ``memory/service.py`` not yet passing the query to ``rank`` (coverage and query shape
  neutral): AUROC 0.788-0.799, ECE 0.022-0.025 raw; second half 0.784-0.788, ECE 0.011-0.016
  calibrated;
- with the query passed (the same tree, that one-line change applied): AUROC 0.821-0.848, ECE
  0.034-0.035 raw; second half 0.819-0.871, ECE 0.031-0.041 calibrated. Two runs each, a
  commit of the index apart; ~55 questions without evidence make ±0.02 AUROC noise.

Category 5 is not separated: its confidence (mean 0.91-0.94) is as high as that of answerable
questions (AUROC for "answerable" 0.42-0.45), and nothing abstains at 0.2. An adversarial
question names the wrong person ("What did Caroline realize after her charity race?" when
Melanie ran it), and retrieval finds the right memories all the same. A speaker-attribution
penalty (the query's named person is not the speaker of the best candidates) was measured:
abstaining on half of category 5 also abstains on 30% of categories 1-4 (injected recall
84% → 60%) and lowers the AUROC to 0.64, so it is not in the model. Telling whose fact a
memory states needs a reader, not retrieval statistics.
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
DEFAULT_THRESHOLD = 0.2  # MemoryPolicy.confidence_threshold
BINS = 10


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
            statuses = Counter(a.status for a in asked)
            scored = [a for a in asked if a.question.category in CATEGORIES]
            # 50/50 split of the scored questions; the first half teaches the calibration.
            order = list(range(len(scored)))
            random.Random(args.seed).shuffle(order)
            half = len(order) // 2
            first = [scored[i] for i in order[:half]]
            second = [scored[i] for i in order[half:]]
            fed = 0
            for a in first:
                if a.status != "ok" or a.confidence is None:
                    continue  # no receipt: nothing the product could be told about
                checked(
                    await client.post(
                        "/v1/feedback", json={"completion_id": a.completion_id, "useful": a.label}
                    )
                )
                fed += 1
            endpoint = checked(await client.get("/v1/calibration"))
    book = calibration_from_endpoint(endpoint)
    report(args, asked, scored, first, second, book, endpoint, fed, statuses)
    print(f"wall time {time.perf_counter() - started:.1f} s")


def report(
    args: argparse.Namespace,
    asked: list[Asked],
    scored: list[Asked],
    first: list[Asked],
    second: list[Asked],
    book: Any,
    endpoint: dict[str, Any],
    fed: int,
    statuses: Counter[str],
) -> None:
    from policies.calibration import calibrated

    def conf(a: Asked) -> float:
        return a.confidence if a.confidence is not None else 0.0

    title = f"LoCoMo confidence, POST /v1/chat/completions, threshold 0 ({args.embedder} embedder)"
    print(f"\n{title}")
    header = (
        f"{'category':<16}{'n':>5}{'label+':>9}{'mean conf':>11}{'AUROC':>8}{'ECE':>8}"
        f"{'abst@0.2':>10}{'recall@0':>10}{'recall@0.2':>12}"
    )
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, list[Asked]]] = [
        (f"{c} {name}", [a for a in asked if a.question.category == c])
        for c, name in ALL_CATEGORIES.items()
    ]
    rows.append(("overall 1-4", scored))
    for label, group in rows:
        if not group:
            continue
        scores = [conf(a) for a in group]
        abstain = statistics.fmean(
            1.0 if (a.status != "ok" or conf(a) < DEFAULT_THRESHOLD) else 0.0 for a in group
        )
        if group[0].question.category == 5 and label != "overall 1-4":
            cells = ["n/a", num(statistics.fmean(scores)), "n/a", "n/a", pct(abstain), "n/a", "n/a"]
        else:
            labels = [a.label for a in group]
            r0 = statistics.fmean(a.recall for a in group)
            r2 = statistics.fmean(a.recall if conf(a) >= DEFAULT_THRESHOLD else 0.0 for a in group)
            cells = [
                pct(statistics.fmean(labels)),
                num(statistics.fmean(scores)),
                num(auroc(scores, labels)),
                num(ece(scores, labels)),
                pct(abstain),
                pct(r0),
                pct(r2),
            ]
        widths = [9, 11, 8, 8, 10, 10, 12]
        print(
            f"{label:<16}{len(group):>5}"
            + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )

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

    second_raw = [conf(a) for a in second]
    second_cal = [calibrated(book, c) for c in second_raw]
    second_labels = [a.label for a in second]
    first_raw = [conf(a) for a in first]
    first_labels = [a.label for a in first]
    print(
        f"\nCalibration through POST /v1/feedback: 50/50 split (seed {args.seed}), "
        f"{fed} first-half outcomes fed"
    )
    print(f"{'set':<34}{'n':>5}{'AUROC':>8}{'ECE':>8}")
    print(
        f"{'first half, raw':<34}{len(first):>5}{num(auroc(first_raw, first_labels)):>8}"
        f"{num(ece(first_raw, first_labels)):>8}"
    )
    print(
        f"{'second half, raw':<34}{len(second):>5}{num(auroc(second_raw, second_labels)):>8}"
        f"{num(ece(second_raw, second_labels)):>8}"
    )
    print(
        f"{'second half, calibrated on first':<34}{len(second):>5}"
        f"{num(auroc(second_cal, second_labels)):>8}{num(ece(second_cal, second_labels)):>8}"
    )
    print(
        f"GET /v1/calibration: outcomes {endpoint['outcomes']:.0f}, "
        f"ECE (in-sample) {endpoint['expected_calibration_error']:.4f}, "
        f"adapted threshold {endpoint['threshold']:.2f} "
        f"(target precision {endpoint['target_precision']})"
    )

    adversarial = [conf(a) for a in asked if a.question.category == 5]
    if adversarial:
        answerable = [conf(a) for a in scored]
        separation = auroc(
            [*answerable, *adversarial], [True] * len(answerable) + [False] * len(adversarial)
        )
        median = statistics.median(adversarial)
        kept = statistics.fmean(a.recall if conf(a) >= median else 0.0 for a in scored)
        print(
            f"\nCategory 5 vs 1-4: AUROC of confidence for 'answerable' {num(separation)}; "
            f"a threshold abstaining on half of category 5 ({median:.3f}) keeps "
            f"{pct(kept)} injected-evidence recall on 1-4 "
            f"(abstains on {pct(statistics.fmean(conf(a) < median for a in scored))})"
        )

    total = sum(statuses.values())
    print(
        "\nX-Memory-Status: "
        + ", ".join(f"{s} {n} ({100 * n / total:.1f}%)" for s, n in statuses.most_common())
    )
    overall = [conf(a) for a in scored]
    labels = [a.label for a in scored]
    cal_ece = ece(second_cal, second_labels)
    print("\nGoals (categories 1-4):")
    print(
        f"  AUROC ≥ 0.80: raw {num(auroc(overall, labels))} "
        f"{'MET' if auroc(overall, labels) >= 0.80 else 'MISSED'}"
    )
    print(
        f"  ECE ≤ 0.05: raw {num(ece(overall, labels))} "
        f"{'MET' if ece(overall, labels) <= 0.05 else 'MISSED'}; calibrated (second half) "
        f"{num(cal_ece)} {'MET' if cal_ece <= 0.05 else 'MISSED'}"
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
