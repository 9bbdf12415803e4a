"""Convert one model to a precision and measure what it bought: for ``inferd optimize`` and for
serving a model whose ``model.toml`` sets ``precision``.

The backends themselves know nothing of precision: a torch model is converted right after the
torch backend loads it, an ONNX model is served from its converted copy by the ordinary ONNX
backend. Both are compared with the fp32 original on the same inputs in the same run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from inferd.backends.base import Backend, Tensors
from inferd.backends.loader import model_file
from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError, ModelNotReady
from inferd.optimize.precision import FULL, check_supported
from inferd.optimize.report import (
    Accuracy,
    OptimizationReport,
    Predict,
    Timing,
    compare,
    evaluation_data,
    time_batches,
)

logger = logging.getLogger("inferd.optimize")

SERVE_REPEATS: Final = 5
"""Timed calls per batch size when a server converts a model on load (kept short)."""


@dataclass(frozen=True, slots=True)
class Optimized:
    """A loaded backend serving the converted model, and the report on it."""

    backend: Backend
    report: OptimizationReport


def optimize_model(
    config: ModelConfig, precision: str, out: Path | None = None, repeats: int = SERVE_REPEATS
) -> Optimized:
    """Convert the model to ``precision``, load it, and compare it with the original."""
    check_supported(config, precision)
    if precision == FULL:
        raise ConfigError(f"model {config.name!r}: precision fp32 is the model as it is")
    if config.backend == "torch":
        if out is not None:
            raise ConfigError(
                f"model {config.name!r}: a torch model is converted when it loads (in "
                "milliseconds), so there is no file to write; leave out --out"
            )
        return _optimize_torch(config, precision, repeats)
    return _optimize_onnx(config, precision, out, repeats)


class OptimizedBackend:
    """A ``Backend`` that converts its model on ``load`` and logs the report in one line."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._inner: Backend | None = None

    def load(self) -> None:
        """Convert, load and measure the model; log the report."""
        optimized = optimize_model(self.config, self.config.precision)
        logger.info("%s", optimized.report.one_line())
        self._inner = optimized.backend

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The converted model's signature (the same as the original's)."""
        return self._inner.signature() if self._inner is not None else ((), ())

    def predict(self, inputs: Tensors) -> Tensors:
        """Run one batch on the converted model."""
        if self._inner is None:
            raise ModelNotReady(f"model {self.config.name!r} is not loaded")
        return self._inner.predict(inputs)


def create_optimized_backend(config: ModelConfig) -> Backend:
    """The backend serving ``config``'s model at ``config.precision`` (not loaded yet)."""
    check_supported(config, config.precision)
    return OptimizedBackend(config)


def _optimize_torch(config: ModelConfig, precision: str, repeats: int) -> Optimized:
    from inferd.optimize.torch_quant import ConvertedTorchBackend

    backend = ConvertedTorchBackend(config, precision)
    backend.load()
    assert backend.original is not None  # set by load()
    header = OptimizationReport(
        config.name, "torch", precision, backend.method, backend.size_before, backend.size_after,
        timings=(), accuracy=None,
    )  # fmt: skip
    completed = config.with_signature(*backend.signature())
    report = _measure(header, completed, backend.original.predict, backend.predict, repeats)
    backend.release_original()
    return Optimized(backend, report)


def _optimize_onnx(
    config: ModelConfig, precision: str, out: Path | None, repeats: int
) -> Optimized:
    from inferd.backends.onnx_backend import OnnxBackend
    from inferd.optimize.onnx_quant import describe, optimized_copy

    source = model_file(config)
    copied = optimized_copy(source, precision, out)
    optimized = OnnxBackend(dataclasses.replace(config, file=str(copied.path.resolve())))
    original = OnnxBackend(config)
    try:
        optimized.load()
    except ConfigError as e:
        raise ConfigError(
            f"model {config.name!r}: the {precision} copy {copied.path} does not load on "
            f"onnxruntime here ({e.message}); serve it at another precision"
        ) from None
    original.load()
    header = OptimizationReport(
        config.name, "onnx", precision, describe(copied.path, precision),
        source.stat().st_size, copied.path.stat().st_size, timings=(), accuracy=None,
        artifact=f"{copied.path} ({'reused' if copied.reused else 'written'})",
    )  # fmt: skip
    completed = config.with_signature(*optimized.signature())
    return Optimized(
        optimized, _measure(header, completed, original.predict, optimized.predict, repeats)
    )


def _measure(
    header: OptimizationReport,
    config: ModelConfig,
    original: Predict,
    optimized: Predict,
    repeats: int,
) -> OptimizationReport:
    """The report with accuracy and speed filled in, or a note on why they could not be."""
    accuracy: Accuracy | None = None
    timings: tuple[Timing, ...] = ()
    note: str | None = None
    try:
        data = evaluation_data(config.inputs, config.batched)
        accuracy = compare(original, optimized, data)
        timings = time_batches(original, optimized, data, config.batched, repeats)
    except Exception as e:  # e.g. a model that refuses made-up inputs
        # The model serves all the same; the report says what it could not measure.
        note = f"not measured: {type(e).__name__}: {getattr(e, 'message', e)}"
    if timings and min(t.speedup for t in timings) < 1:
        slower = ", ".join(t.label for t in timings if t.speedup < 1)
        note = f"slower than fp32 at {slower} on this machine"
    return dataclasses.replace(header, timings=timings, accuracy=accuracy, note=note)
