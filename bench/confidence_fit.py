"""Refit and cross-check the confidence coefficients of ``policies/confidence.py`` on LoCoMo.

Prints figures; it is a benchmark, never a test. Same data, write path and chat read path as
:mod:`bench.locomo_confidence` (categories 1-4, threshold 0 so everything is injected, label:
an evidence turn is among the memories the receipt names). For each question the recall's
candidates are captured on their way into :func:`memory.retrieval.rank` and
:func:`memory.retrieval.confidence_features` is measured on them with the question's text.

A logistic regression (Newton's method, a little L2) is then fitted on those features:

- on all questions: the coefficients to compare with the fixed ones in the product;
- on a random half, reported on the other half (fixed seed);
- leaving each conversation out in turn, pooled: the honest estimate for conversations the
  coefficients have never seen (the figure is also measured on LoCoMo conversations that are
  not in the repo).

    .venv/bin/python -m bench.confidence_fit                    # real MiniLM, about a minute

Features are measured with the question's text, as the product does once ``memory/service.py``
passes the query to ``rank`` (until then coverage and query shape stay neutral over HTTP).

Last run (dev split, 582 questions, 55 without evidence injected): the product's fixed
coefficients AUROC 0.840 / ECE 0.032; refitted on a random half → the other half 0.851 / 0.020;
leaving each conversation out 0.875, 0.792, 0.979, 0.769, pooled 0.796 / 0.029. Refitted on
all: intercept -3.9, margin 2.5, agreement 2.7, keyword strength 2.0, coverage 1.5,
speculative -1.7, names a date 1.3; coefficients move by ±0.5 between halves, so the product
keeps rounded, somewhat shrunk values.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.locomo_confidence import ask_chat, auroc, ece
from bench.locomo_recall import (
    CATEGORIES,
    DEFAULT_DATA,
    REPO,
    checked,
    ingest,
    load,
    load_embedder,
    serve,
)

K = 24  # MemoryPolicy.candidates: what the chat path recalls


@dataclass
class Sample:
    conversation: str
    features: tuple[float, ...]
    product: float  # the product's own confidence for these features
    label: bool


def fit(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], l2: float = 0.1) -> Any:
    """Logistic regression by Newton's method; returns (intercept, *coefficients)."""
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict(w: Any, x: npt.NDArray[np.float64]) -> list[float]:
    return list(1 / (1 + np.exp(-(w[0] + x @ w[1:]))))


async def collect(args: argparse.Namespace) -> list[Sample]:
    import memory.service as service_module
    from memory.model import utcnow
    from memory.retrieval import confidence_features, rank
    from memory.store import Candidates
    from memory.usefulness import UsefulnessPrior, posterior_mean
    from policies.confidence import confidence
    from tests.conftest import LoopbackServer
    from tests.fakes import FakeUpstream

    captured: list[Candidates] = []

    def spy(candidates: Candidates, **kwargs: Any) -> Any:
        captured.append(candidates)
        return rank(candidates, **kwargs)

    service_module.rank = spy  # type: ignore[assignment]  # read-only observation
    upstream = FakeUpstream()
    policy = {"confidence_threshold": 0.0, "recall_deadline_ms": 10_000.0}
    samples = []
    with LoopbackServer(upstream.asgi()) as server:
        async with serve(load_embedder(args.embedder), f"{server.url}/v1", policy) as client:
            for conversation in load(args.data)[: args.limit or None]:
                stored = await ingest(client, conversation)
                for question in conversation.questions:
                    if question.category not in CATEGORIES:
                        continue
                    captured.clear()
                    asked = await ask_chat(client, upstream, stored, question)
                    if asked.status != "ok" or not captured:
                        continue
                    candidates = captured[-1]
                    result = rank(candidates, k=K, max_tokens=None, now=utcnow())
                    where = {m.id: n for n, m in enumerate(candidates.memories)}
                    chosen = [where[item.memory.id] for item in result.items]
                    useful = np.asarray(
                        [
                            posterior_mean(m.useful, m.not_useful, UsefulnessPrior())
                            for m in candidates.memories
                        ]
                    )
                    features = confidence_features(candidates, chosen, question.text, useful)
                    row = tuple(float(v) for v in astuple(features))
                    samples.append(
                        Sample(conversation.sample_id, row, confidence(features), asked.label)
                    )
                print(f"{conversation.sample_id}: {len(samples)} questions so far")
            checked(await client.get("/health"))
    return samples


def report(samples: list[Sample], seed: int) -> None:
    from policies.confidence import ConfidenceFeatures

    names = [f.name for f in fields(ConfidenceFeatures)]
    # Usefulness is 0.5 for every cold-start question: it carries no signal here.
    used = [i for i, name in enumerate(names) if name != "usefulness"]
    x = np.asarray([[s.features[i] for i in used] for s in samples], np.float64)
    y = np.asarray([s.label for s in samples], np.float64)
    labels = [s.label for s in samples]
    product = [s.product for s in samples]
    print(f"\n{len(samples)} questions, {int(len(y) - y.sum())} without evidence injected")
    print(
        f"product (fixed coefficients): AUROC {auroc(product, labels):.3f}, "
        f"ECE {ece(product, labels):.3f}"
    )

    w = fit(x, y)
    print("\nfitted on all questions:")
    print(f"  {'intercept':<18}{w[0]:>7.2f}")
    for i, coefficient in zip(used, w[1:], strict=True):
        print(f"  {names[i]:<18}{coefficient:>7.2f}")

    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    train, test = order[:half], order[half:]
    w = fit(x[train], y[train])
    p = predict(w, x[test])
    held = [labels[i] for i in test]
    print(
        f"\nrandom half → other half (seed {seed}): AUROC {auroc(p, held):.3f}, "
        f"ECE {ece(p, held):.3f}"
    )

    pooled: list[float] = []
    pooled_labels: list[bool] = []
    for conversation in sorted({s.conversation for s in samples}):
        inside = [i for i, s in enumerate(samples) if s.conversation != conversation]
        outside = [i for i, s in enumerate(samples) if s.conversation == conversation]
        w = fit(x[inside], y[inside])
        p = predict(w, x[outside])
        out_labels = [labels[i] for i in outside]
        print(f"  left out {conversation}: AUROC {auroc(p, out_labels):.3f} (n {len(outside)})")
        pooled += p
        pooled_labels += out_labels
    print(
        f"leave-one-conversation-out, pooled: AUROC {auroc(pooled, pooled_labels):.3f}, "
        f"ECE {ece(pooled, pooled_labels):.3f}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--embedder", choices=["real", "fake"], default="real")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    parser.add_argument("--seed", type=int, default=5, help="seed of the 50/50 split")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    arguments = parse_args()
    report(asyncio.run(collect(arguments)), arguments.seed)
