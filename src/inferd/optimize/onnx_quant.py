"""ONNX models at another precision: a converted copy of the graph, cached beside the original.

int8 is onnxruntime's dynamic quantization (``quantize_dynamic``): int8 weights, activations
quantized per call, so no calibration data is needed. fp16 is the float16 conversion that ships
with onnxruntime (inputs and outputs stay fp32); whether it runs at all depends on the CPU
provider's kernels for the graph's ops, so the copy is loaded and measured before it serves.

``model.onnx`` at int8 becomes ``model.int8.onnx``, with ``model.int8.json`` beside it saying
what it was made from. A copy is reused while it is newer than the original and was made from
the same original (size and modification time) by the same inferd and onnxruntime versions with
the same options; otherwise it is made again. Writes go to a temporary file renamed into place,
so replicas loading at once never read a half-written copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import onnx
import onnxruntime

from inferd.errors import ConfigError
from inferd.optimize.precision import copy_name
from inferd.version import __version__

STAMP_SUFFIX: Final = ".json"
OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "int8": {"weight_type": "QInt8", "per_channel": False, "reduce_range": False},
    "fp16": {"keep_io_types": True},
}
_INT8_OPS: Final = frozenset(
    {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QGemm", "QAttention"}
)


@dataclass(frozen=True, slots=True)
class OnnxCopy:
    """The converted copy and whether an earlier one was reused."""

    path: Path
    reused: bool


def optimized_copy(source: Path, precision: str, out: Path | None = None) -> OnnxCopy:
    """The copy of ``source`` at ``precision``: cached beside it (or at ``out``), made if stale."""
    if precision not in OPTIONS:
        raise ConfigError(f"{source}: no ONNX conversion to precision {precision!r}")
    target = out or source.with_name(copy_name(source.name, precision))
    stamp = _stamp(source, precision)
    if _is_current(target, source, stamp):
        return OnnxCopy(target, reused=True)
    _write_atomically(target, lambda tmp: _convert(source, tmp, precision))
    _write_atomically(
        _stamp_path(target), lambda tmp: tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    )
    return OnnxCopy(target, reused=False)


def describe(path: Path, precision: str) -> str:
    """What the copy is, e.g. 'onnxruntime dynamic int8 quantization (3 integer matmuls)'."""
    if precision == "fp16":
        return "onnx float16 conversion (fp32 in and out)"
    graph = onnx.load(str(path), load_external_data=False).graph
    count = sum(node.op_type in _INT8_OPS for node in graph.node)
    return f"onnxruntime dynamic int8 quantization ({count} integer matmul/conv ops)"


def _stamp(source: Path, precision: str) -> dict[str, Any]:
    info = source.stat()
    return {
        "inferd": __version__,
        "onnxruntime": onnxruntime.__version__,
        "precision": precision,
        "options": OPTIONS[precision],
        "source": source.name,
        "source_size": info.st_size,
        "source_mtime_ns": info.st_mtime_ns,
    }


def _stamp_path(target: Path) -> Path:
    return target.with_suffix(STAMP_SUFFIX)


def _is_current(target: Path, source: Path, stamp: dict[str, Any]) -> bool:
    try:
        recorded = json.loads(_stamp_path(target).read_text())
        newer = target.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except (OSError, ValueError):
        return False
    return newer and recorded == stamp


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise ConfigError(
            f"cannot write {target}: {e.strerror or e}; make {target.parent} writable, or "
            f"write the copy elsewhere with inferd optimize --out FILE and serve that file"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _convert(source: Path, target: Path, precision: str) -> None:
    try:
        if precision == "int8":
            _quantize(source, target)
        else:
            _to_float16(source, target)
    except (OSError, ConfigError):
        raise
    except Exception as e:  # onnx and onnxruntime raise many types for a graph they reject
        raise ConfigError(
            f"{source}: conversion to {precision} failed: {type(e).__name__}: {e}"
        ) from e


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = OPTIONS["int8"]
    with _quiet_quantizer():
        quantize_dynamic(
            source,
            target,
            weight_type=getattr(QuantType, options["weight_type"]),
            per_channel=options["per_channel"],
            reduce_range=options["reduce_range"],
        )


def _to_float16(source: Path, target: Path) -> None:
    saved_path = list(sys.path)
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    finally:
        sys.path[:] = saved_path  # onnxruntime.transformers appends its folder to sys.path

    model = onnx.load(str(source))
    with warnings.catch_warnings():
        # It warns for each constant clamped to fp16's range; the measured report shows the
        # effect that counts, on the outputs.
        warnings.simplefilter("ignore", UserWarning)
        converted = convert_float_to_float16(model, **OPTIONS["fp16"])
    onnx.save(converted, str(target))


class _QuantizerNotes(logging.Filter):
    """Drops the quantizer's notes, which it logs on the root logger (errors still pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = f"onnxruntime{os.sep}quantization" in record.pathname
        return not from_quantizer or record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """quantize_dynamic logs a line per tensor and a hint to run its pre-processing first;
    that step (shape inference and graph fusion) measured no change in speed or outputs here."""
    root = logging.getLogger()
    notes = _QuantizerNotes()
    root.addFilter(notes)
    try:
        yield
    finally:
        root.removeFilter(notes)
