"""Exporting a sentence-transformers model to an ONNX graph ORT runs fast, once, cached.

Pipeline: torch export with eager attention → ORT's transformer fusions (Attention,
LayerNorm, GELU) → optionally dynamic int8 weights per channel. Why each step, by
measurement: :mod:`memory.embedder`'s docstring. Needs torch and transformers only when
an export is missing; a cached graph loads without importing either.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from memory.embedder import ModelSource

__all__ = ["ensure_onnx_export", "export_dir"]

# Bumped whenever the exported graph changes, so stale cached exports are not reused.
_EXPORT_FORMAT = 1


class export_dir:
    """``cache_dir`` itself, or a temporary directory removed on exit when it is None."""

    def __init__(self, cache_dir: Path | None) -> None:
        self._cache_dir = cache_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self._cache_dir is not None:
            return self._cache_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="memshadow-onnx-")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def ensure_onnx_export(source: ModelSource, cache_dir: Path, *, quantize: bool) -> Path:
    """Return the cached ONNX graph for ``source``, exporting it first if needed.

    Pipeline: torch export (eager attention) → ORT transformer fusions → optionally
    int8. The cache key covers the model path, its weight files' sizes and mtimes, and
    :data:`_EXPORT_FORMAT`. Files are written under a temporary name and renamed, so a
    crash or a concurrent loader never sees half a model.
    """
    target = cache_dir / f"{source.path.name}-{_export_key(source)}"
    fp32 = target / "model.onnx"
    if not fp32.is_file():
        with _quiet_toolchain():
            _atomic_write(fp32, lambda tmp: _export_fused(source, tmp))
    if not quantize:
        return fp32
    int8 = target / "model.int8.onnx"
    if not int8.is_file():
        with _quiet_toolchain():
            _atomic_write(int8, lambda tmp: _quantize_onnx(fp32, tmp))
    return int8


class _BelowErrorFrom(logging.Filter):
    """Drops records below ERROR logged from files under these directories."""

    def __init__(self, directories: tuple[str, ...]) -> None:
        super().__init__()
        self._directories = directories

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(self._directories)


@contextmanager
def _quiet_toolchain() -> Iterator[None]:
    """Keep the export's toolchain out of the operator's log: ORT's optimizer and quantizer
    log ~55 lines of their internals at INFO and WARNING (some through the root logger,
    so a logger's level cannot stop them), and transformers draws a progress bar while it
    loads the weights. Errors still pass."""
    import onnxruntime  # type: ignore[import-untyped]
    import transformers
    from transformers.utils import logging as transformers_logging

    quiet = _BelowErrorFrom(
        tuple(str(Path(m.__file__ or "").parent) for m in (onnxruntime, transformers))
    )
    candidates = (*logging.getLogger().handlers, logging.lastResort)
    handlers = [handler for handler in candidates if handler is not None]
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
        if bars_were_on:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _export_key(source: ModelSource) -> str:
    digest = hashlib.sha256(f"{_EXPORT_FORMAT}:{source.path.resolve()}".encode())
    for weights in sorted(source.path.glob("*.safetensors")) + sorted(source.path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _atomic_write(final: Path, write: Callable[[Path], None]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        tmp = workdir / final.name
        write(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _export_fused(source: ModelSource, out: Path) -> None:
    from onnxruntime.transformers import optimizer  # type: ignore[import-untyped]

    raw = out.with_name("raw.onnx")
    _export_torch(source, raw)
    config = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    # Fuses attention, embedding+LayerNorm, bias+GELU and skip+LayerNorm into single
    # ORT kernels; unmatched patterns are left as they are, so this is safe to attempt.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
        )
    fused.save_model_to_file(str(out))


def _export_torch(source: ModelSource, out: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax, which ORT's optimizer fuses into
    # its Attention kernel; the SDPA trace is left unfused (measured: 20% slower).
    encoder = AutoModel.from_pretrained(
        str(source.path), local_files_only=True, attn_implementation="eager"
    ).eval()
    wants_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if wants_types else [])
    # Two rows of different lengths, so the traced graph contains the padding-mask path.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    sample = (ids, (ids != 0).long(), torch.zeros_like(ids))[: len(names)]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    # The legacy TorchScript exporter needs only the `onnx` package (the dynamo one also
    # needs onnxscript); its deprecation and tracer warnings are about code we do not own.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _pooled(encoder, names, source.pooling),
            sample,
            str(out),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _pooled(encoder: torch.nn.Module, names: list[str], pooling: str) -> torch.nn.Module:
    """Wrap ``encoder`` so its output is the pooled, L2-normalised sentence vector."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.encoder(**dict(zip(names, inputs, strict=True)))[0]
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = inputs[1].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Pooled().eval()


def _quantize_onnx(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    # Weights int8 per output channel, activations uint8 scaled at run time: no
    # calibration data needed. Per-tensor weights fell to cosine 0.96 vs fp32;
    # per-channel keeps 0.993. Shape inference cannot type the outputs of ORT's fused
    # ops, hence the explicit default tensor type.
    quantize_dynamic(
        fp32,
        out,
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
