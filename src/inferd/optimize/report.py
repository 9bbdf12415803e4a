"""What converting a model bought and cost: size, same-run speed ratio, and measured accuracy.

Accuracy is measured, never assumed. For a digits classifier (one FP32 input of 64 pixels and
ten classes out) it is the *agreement*: the fraction of held-out digits on which the converted
model picks the same class as the original. For any other model it is the largest and the mean
absolute difference between the two models' outputs on random inputs of its signature. Speed is
the ratio of median latencies at batch 1 and 64, timed in the same run, alternating the two
models so that a noisy neighbour slows both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from inferd.backends.base import Tensors
from inferd.config import TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.optimize.digits import held_out_digits

Predict = Callable[[Tensors], Tensors]
TIMED_BATCHES: Final = (1, 64)
RANDOM_ROWS: Final = 64
VARIABLE_DIM: Final = 8
"""Size given to a variable non-batch dimension when random inputs are made."""
DIGITS_PIXELS: Final = 64
DIGITS_CLASSES: Final = 10
WARMUP: Final = 2
SEED: Final = 0


@dataclass(frozen=True, slots=True)
class EvaluationData:
    """Inputs both models are run on; ``labels`` when they are held-out digits."""

    inputs: Tensors
    description: str
    labels: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Accuracy:
    """How far the converted model's outputs are from the original's on the same inputs."""

    data: str
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float | None = None
    """Fraction of rows whose argmax (the predicted class) is the same; classifiers only."""
    original_accuracy: float | None = None
    optimized_accuracy: float | None = None

    def to_text(self) -> str:
        """One clause: agreement (where measured) and output differences."""
        diff = f"max |diff| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}"
        if self.agreement is None:
            return f"{diff} on {self.data}"
        text = f"agreement {self.agreement:.2%} with fp32 on {self.data}"
        if self.original_accuracy is not None and self.optimized_accuracy is not None:
            text += f" (accuracy {self.original_accuracy:.4f} -> {self.optimized_accuracy:.4f})"
        return f"{text}; {diff}"


@dataclass(frozen=True, slots=True)
class Timing:
    """Median latency of one batch, original and converted, measured in the same run."""

    batch: int
    """Rows per call; 0 when the model takes no batch axis."""
    original_ms: float
    optimized_ms: float

    @property
    def speedup(self) -> float:
        """How many times faster the converted model is (below 1: slower)."""
        return self.original_ms / self.optimized_ms if self.optimized_ms > 0 else float("inf")

    @property
    def label(self) -> str:
        """'batch 64', or 'one call' for a model without a batch axis."""
        return f"batch {self.batch}" if self.batch else "one call"

    def to_text(self) -> str:
        return (
            f"{self.label}: {self.original_ms:.3f} ms -> {self.optimized_ms:.3f} ms "
            f"({self.speedup:.2f}x)"
        )


@dataclass(frozen=True, slots=True)
class OptimizationReport:
    """The outcome of converting one model to a precision."""

    model: str
    backend: str
    precision: str
    method: str
    """What was done, e.g. 'dynamic int8 quantization of 3 nn.Linear layers'."""
    size_before: int
    size_after: int
    """Bytes of the weights (torch: serialised) or of the model file (onnx), before and after."""
    timings: tuple[Timing, ...]
    accuracy: Accuracy | None
    artifact: str | None = None
    """The file written (an ONNX copy), if any."""
    note: str | None = None

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before if self.size_before else 1.0

    def to_text(self) -> str:
        """The multi-line report ``inferd optimize`` prints."""
        lines = [
            f"{self.model} ({self.backend}) -> {self.precision}: {self.method}",
            f"  size      {_bytes(self.size_before)} -> {_bytes(self.size_after)} "
            f"({self.size_ratio:.2f}x)",
            "  speed     "
            + ("; ".join(t.to_text() for t in self.timings) or "not measured")
            + " (same-run ratio of medians, fp32 / converted)",
            "  accuracy  " + (self.accuracy.to_text() if self.accuracy else "not measured"),
        ]
        if self.artifact:
            lines.append(f"  written   {self.artifact}")
        if self.note:
            lines.append(f"  note      {self.note}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The line a server logs when it converts a model on load."""
        speed = ", ".join(f"{t.speedup:.2f}x at {t.label}" for t in self.timings)
        accuracy = self.accuracy.to_text() if self.accuracy else "accuracy not measured"
        return (
            f"model {self.model!r} at {self.precision} ({self.method}): size "
            f"{_bytes(self.size_before)} -> {_bytes(self.size_after)}; speed {speed or '-'} "
            f"vs fp32; {accuracy}" + (f"; {self.note}" if self.note else "")
        )


def agreement(original: np.ndarray, optimized: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis is the same in both outputs."""
    if original.shape != optimized.shape or original.ndim == 0 or original.shape[0] == 0:
        raise ValueError(f"cannot compare outputs of shapes {original.shape}, {optimized.shape}")
    same = np.argmax(original, axis=-1) == np.argmax(optimized, axis=-1)
    return float(np.mean(same))


def abs_diff(original: Tensors, optimized: Tensors) -> tuple[float, float]:
    """Largest and mean absolute difference over every floating-point output."""
    diffs = [
        np.abs(original[name].astype(np.float64) - optimized[name].astype(np.float64)).ravel()
        for name, value in original.items()
        if np.issubdtype(value.dtype, np.floating) and name in optimized
    ]
    if not diffs:
        return 0.0, 0.0
    joined = np.concatenate(diffs)
    if joined.size == 0:
        return 0.0, 0.0
    return float(joined.max()), float(joined.mean())


def compare(original: Predict, optimized: Predict, data: EvaluationData) -> Accuracy:
    """Run both models on ``data`` and measure how far apart their outputs are."""
    before, after = original(data.inputs), optimized(data.inputs)
    largest, mean = abs_diff(before, after)
    first = next(iter(before.values()))
    if data.labels is None or first.ndim != 2 or first.shape[-1] != DIGITS_CLASSES:
        return Accuracy(data.description, largest, mean)
    second = after[next(iter(before))]
    return Accuracy(
        data.description,
        largest,
        mean,
        agreement=agreement(first, second),
        original_accuracy=float(np.mean(first.argmax(axis=-1) == data.labels)),
        optimized_accuracy=float(np.mean(second.argmax(axis=-1) == data.labels)),
    )


def time_batches(
    original: Predict, optimized: Predict, data: EvaluationData, batched: bool, repeats: int
) -> tuple[Timing, ...]:
    """Median latency of both models at batch 1 and 64 (or the model's one shape)."""
    if not batched:
        return (_time_pair(original, optimized, data.inputs, 0, repeats),)
    rows = min(len(v) for v in data.inputs.values())
    return tuple(
        _time_pair(original, optimized, _rows(data.inputs, batch), batch, repeats)
        for batch in TIMED_BATCHES
        if batch <= rows
    )


def evaluation_data(inputs: tuple[TensorSpec, ...], batched: bool) -> EvaluationData:
    """Held-out digits for a model that takes 64 pixels, else seeded random inputs."""
    if batched and _takes_digits(inputs):
        digits = held_out_digits()
        if digits is not None:
            x, y = digits
            return EvaluationData({inputs[0].name: x}, f"{len(x)} held-out digits", y)
    rng = np.random.default_rng(SEED)
    tensors = {spec.name: _random(spec, batched, rng) for spec in inputs}
    rows = f"{RANDOM_ROWS} rows of " if batched else ""
    return EvaluationData(tensors, f"{rows}random inputs")


def _time_pair(
    original: Predict, optimized: Predict, inputs: Tensors, batch: int, repeats: int
) -> Timing:
    for _ in range(WARMUP):
        original(inputs)
        optimized(inputs)
    before: list[float] = []
    after: list[float] = []
    for _ in range(max(repeats, 1)):
        before.append(_elapsed_ms(original, inputs))
        after.append(_elapsed_ms(optimized, inputs))
    return Timing(batch, float(np.median(before)), float(np.median(after)))


def _elapsed_ms(predict: Predict, inputs: Tensors) -> float:
    start = time.perf_counter()
    predict(inputs)
    return (time.perf_counter() - start) * 1e3


def _rows(inputs: Tensors, count: int) -> Tensors:
    return {name: value[:count] for name, value in inputs.items()}


def _takes_digits(inputs: tuple[TensorSpec, ...]) -> bool:
    if len(inputs) != 1:
        return False
    spec = inputs[0]
    return spec.datatype == "FP32" and len(spec.shape) == 2 and spec.shape[1] == DIGITS_PIXELS


def _random(spec: TensorSpec, batched: bool, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(VARIABLE_DIM if d < 0 else d for d in spec.shape)
    if batched and shape:
        shape = (RANDOM_ROWS, *shape[1:])
    dtype = to_numpy_dtype(spec.datatype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, shape).astype(dtype)
    raise ValueError(f"input {spec.name!r} has datatype {spec.datatype}: no random values for it")


def _bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
