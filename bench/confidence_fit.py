"""Refit and cross-check the confidence coefficients of ``policies/confidence.py`` on LoCoMo.

Prints figures; it is a benchmark, never a test. Same data, write path and chat read path as
:mod:`bench.locomo_confidence` (categories 1-5, threshold 0 so everything is injected). For each
question the recall's candidates are captured on their way into :func:`memory.retrieval.rank`
and :func:`memory.retrieval.confidence_features` is measured on them with the question's text,
exactly as the product does. Label: an evidence turn is among the memories the receipt names;
always false for category 5 (adversarial: nothing true is in memory, so no injection helps).

The model has two parts, fitted in turn, as the product applies them:

1. the *retrieval* logistic (intercept and every feature but ``usefulness`` and
   ``misattribution``), fitted on categories 1-4: did the search find the evidence?
2. the *misattribution* slope, fitted on categories 1-5 with part 1's log-odds as a fixed
   offset and no intercept of its own: how much less likely an injection helps when another
   speaker's statements match the query better than the named person's. With no such sign
   (measure 0) the confidence is part 1's alone, so the share of adversarial questions in
   this benchmark does not leak into every other question's confidence.

Each is fitted (Newton's method, a little L2):

- on all questions: the coefficients to compare with the fixed ones in the product;
- on a random half, reported on the other half (fixed seed);
- leaving each conversation out in turn, pooled: the honest estimate for conversations the
  coefficients have never seen (the figure is also measured on LoCoMo conversations that are
  not in the repo). The product's fixed coefficients were fitted on all four conversations,
  so its own figures here are in-sample.

    .venv/bin/python -m bench.confidence_fit                           # real MiniLM, ~3 minutes
    .venv/bin/python -m bench.confidence_fit --samples /tmp/conf.json  # reuse measured features

Last runs (two, with the shipped features): the product's coefficients in-sample 1-4 AUROC
0.829 / 0.824, ECE 0.034; leaving each conversation out, pooled, 0.795 / 0.789 (per
conversation 0.826, 0.793, 0.969, 0.737 and 0.823, 0.798, 0.960, 0.722), ECE 0.035 / 0.036,
category 5 abstaining 43.9% / 42.8% at 0.2 for 2.2% of categories 1-4; the misattribution
slope fitted -13.4 / -13.3 (-11.9 to -15.8 per fold).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.locomo_confidence import ask_chat, auroc, ece, load_all
from bench.locomo_recall import (
    CATEGORIES,
    DEFAULT_DATA,
    REPO,
    checked,
    ingest,
    load_embedder,
    serve,
)

K = 24  # MemoryPolicy.candidates: what the chat path recalls
# Not fitted: usefulness is 0.5 for every cold-start question; misattribution is part 2.
NOT_RETRIEVAL = ("usefulness", "misattribution")
Floats = npt.NDArray[np.float64]


@dataclass
class Sample:
    conversation: str
    category: int
    features: dict[str, float]
    product: float  # the product's own confidence for these features
    label: bool
    recall: float  # injected-evidence recall at threshold 0


def fit(x: Floats, y: Floats, l2: float = 0.1) -> Floats:
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


def fit_slope(offset: Floats, g: Floats, y: Floats, l2: float = 0.1) -> float:
    """The s ≥ 0 of log-odds ``offset - s·g`` that fits ``y`` best (convex, damped Newton)."""

    def loss(s: float) -> float:
        z = offset - s * g
        return float(np.sum(np.logaddexp(0, z) - y * z) + l2 * s * s / 2)

    s = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(offset - s * g)))
        gradient = float(np.sum((y - p) * g)) + l2 * s
        hessian = float(np.sum(p * (1 - p) * g * g)) + l2
        step = gradient / hessian
        while step and loss(max(0.0, s - step)) > loss(s):
            step /= 2
            if abs(step) < 1e-10:
                step = 0.0
        s = max(0.0, s - step)
        if abs(step) < 1e-8:
            break
    return s


@dataclass
class Model:
    names: list[str]  # retrieval features, in order
    w: Floats  # intercept first
    slope: float  # misattribution

    def predict(self, samples: Sequence[Sample]) -> Floats:
        z = self.w[0] + matrix(samples, self.names) @ self.w[1:]
        g = np.asarray([s.features["misattribution"] for s in samples])
        return 1 / (1 + np.exp(-(z - self.slope * g)))


def matrix(samples: Sequence[Sample], names: Sequence[str]) -> Floats:
    return np.asarray([[s.features[n] for n in names] for s in samples], np.float64)


def fit_model(samples: Sequence[Sample]) -> Model:
    names = [n for n in samples[0].features if n not in NOT_RETRIEVAL]
    answerable = [s for s in samples if s.category in CATEGORIES]
    w = fit(matrix(answerable, names), np.asarray([s.label for s in answerable], np.float64))
    offset = w[0] + matrix(samples, names) @ w[1:]
    g = np.asarray([s.features["misattribution"] for s in samples])
    y = np.asarray([s.label for s in samples], np.float64)
    return Model(names, w, fit_slope(offset, g, y))


def evaluate(title: str, p: Sequence[float], samples: Sequence[Sample], threshold: float) -> None:
    answerable = [i for i, s in enumerate(samples) if s.category in CATEGORIES]
    adversarial = [i for i, s in enumerate(samples) if s.category == 5]
    a14 = [p[i] for i in answerable]
    y14 = [samples[i].label for i in answerable]
    y15 = [s.label for s in samples]
    kept = np.mean([samples[i].recall if p[i] >= threshold else 0.0 for i in answerable])
    print(
        f"{title:<44} 1-4 AUROC {auroc(a14, y14):.3f} ECE {ece(a14, y14):.3f} | "
        f"1-5 AUROC {auroc(list(p), y15):.3f} ECE {ece(list(p), y15):.3f} | "
        f"at {threshold}: cat-5 abstains {np.mean([p[i] < threshold for i in adversarial]):.1%}"
        f", 1-4 abstains {np.mean([v < threshold for v in a14]):.1%}, "
        f"1-4 injected recall {kept:.1%}"
    )


def report(samples: list[Sample], seed: int) -> None:
    from policies.decision import MemoryPolicy

    threshold = MemoryPolicy().confidence_threshold
    answerable = [s for s in samples if s.category in CATEGORIES]
    recall = np.mean([s.recall for s in answerable])
    print(
        f"\n{len(answerable)} questions of categories 1-4 "
        f"({sum(not s.label for s in answerable)} without evidence injected; injected-evidence "
        f"recall at threshold 0 {recall:.1%}), {len(samples) - len(answerable)} of category 5"
    )
    evaluate("product (fixed coefficients, in-sample)", [s.product for s in samples], samples,
             threshold)  # fmt: skip

    model = fit_model(samples)
    print("\nfitted on all questions:")
    print(f"  {'intercept':<18}{model.w[0]:>7.2f}")
    for name, coefficient in zip(model.names, model.w[1:], strict=True):
        print(f"  {name:<18}{coefficient:>7.2f}")
    print(f"  {'misattribution':<18}{-model.slope:>7.2f}   (categories 1-5, offset by the above)")
    evaluate("refitted on all (in-sample)", list(model.predict(samples)), samples, threshold)

    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    train = [samples[i] for i in order[: len(order) // 2]]
    test = [samples[i] for i in order[len(order) // 2 :]]
    evaluate(f"random half -> other half (seed {seed})", list(fit_model(train).predict(test)),
             test, threshold)  # fmt: skip

    pooled: list[Sample] = []
    p: list[float] = []
    for conversation in sorted({s.conversation for s in samples}):
        inside = [s for s in samples if s.conversation != conversation]
        outside = [s for s in samples if s.conversation == conversation]
        held = fit_model(inside)
        out = list(held.predict(outside))
        pooled += outside
        p += out
        a14 = [(v, s.label) for v, s in zip(out, outside, strict=True) if s.category in CATEGORIES]
        print(
            f"  left out {conversation}: 1-4 AUROC "
            f"{auroc([v for v, _ in a14], [y for _, y in a14]):.3f} (n {len(a14)}), "
            f"misattribution {-held.slope:.1f}"
        )
    evaluate("leave-one-conversation-out, pooled", p, pooled, threshold)


async def collect(args: argparse.Namespace) -> list[Sample]:
    import memory.service as service_module
    from memory.model import utcnow
    from memory.retrieval import confidence_features, rank
    from memory.store import Candidates
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
            for conversation in load_all(args.data)[: args.limit or None]:
                stored = await ingest(client, conversation)
                for question in conversation.questions:
                    captured.clear()
                    asked = await ask_chat(client, upstream, stored, question)
                    if asked.status != "ok" or not captured:
                        continue
                    candidates = captured[-1]
                    result = rank(candidates, k=K, max_tokens=None, now=utcnow())
                    where = {m.id: n for n, m in enumerate(candidates.memories)}
                    chosen = [where[item.memory.id] for item in result.items]
                    useful = np.full(len(candidates.memories), 0.5)  # no feedback yet
                    features = confidence_features(candidates, chosen, question.text, useful)
                    answerable = question.category in CATEGORIES
                    samples.append(
                        Sample(
                            conversation.sample_id,
                            question.category,
                            {k: float(v) for k, v in asdict(features).items()},
                            confidence(features),
                            asked.label and answerable,
                            asked.recall if answerable else 0.0,
                        )
                    )
                print(f"{conversation.sample_id}: {len(samples)} questions so far")
            checked(await client.get("/health"))
    return samples


def samples_of(args: argparse.Namespace) -> list[Sample]:
    """Measured features, from ``--samples`` when that file exists (else measured and saved)."""
    path: Path | None = args.samples
    if path is not None and path.is_file():
        return [Sample(**row) for row in json.loads(path.read_text())]
    samples = asyncio.run(collect(args))
    if path is not None:
        path.write_text(json.dumps([asdict(s) for s in samples]))
    return samples


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--embedder", choices=["real", "fake"], default="real")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    parser.add_argument("--seed", type=int, default=5, help="seed of the 50/50 split")
    parser.add_argument(
        "--samples", type=Path, default=None,
        help="JSON of measured features: read if it exists, else written (outside the repo)",
    )  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    arguments = parse_args()
    report(samples_of(arguments), arguments.seed)
