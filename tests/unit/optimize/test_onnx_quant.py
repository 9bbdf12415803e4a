"""ONNX models at int8 and fp16: the cached copy beside the original, and serving from it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx_models import write_onnx_mlp

from inferd.config import ModelConfig
from inferd.errors import ConfigError
from inferd.optimize.onnx_quant import describe, optimized_copy
from inferd.repository import load_model

X = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": X})
    assert isinstance(out, np.ndarray)
    return out


def _later(path: Path) -> None:
    """Move the file's modification time a second on (no sleeping needed)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))


def test_the_int8_copy_is_made_once_and_reused(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    first = optimized_copy(source, "int8")
    assert first.path == tmp_path / "model.int8.onnx" and not first.reused
    made = first.path.stat().st_mtime_ns
    second = optimized_copy(source, "int8")
    assert second.reused and second.path.stat().st_mtime_ns == made
    stamp = json.loads((tmp_path / "model.int8.json").read_text())
    assert stamp["precision"] == "int8" and stamp["source"] == "model.onnx"
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written is left behind


def test_a_changed_original_makes_a_new_copy(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx", seed=0)
    old = optimized_copy(source, "int8").path.read_bytes()
    write_onnx_mlp(source, seed=1)
    _later(source)
    renewed = optimized_copy(source, "int8")
    assert not renewed.reused
    assert renewed.path.read_bytes() != old


def test_a_copy_from_other_options_is_not_reused(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    copy = optimized_copy(source, "int8").path
    stamp_path = tmp_path / "model.int8.json"
    stamp = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps({**stamp, "inferd": "0.0.0"}))
    assert not optimized_copy(source, "int8").reused
    copy.unlink()
    assert not optimized_copy(source, "int8").reused


def test_int8_outputs_stay_close_and_the_graph_uses_integer_matmuls(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    copy = optimized_copy(source, "int8").path
    reference, quantized = _run(source), _run(copy)
    assert np.abs(reference - quantized).max() <= 0.05 * np.abs(reference).max()
    assert "2 integer matmul/conv ops" in describe(copy, "int8")
    assert copy.stat().st_size < source.stat().st_size


def test_fp16_copy_runs_on_the_cpu_with_fp32_in_and_out(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    copy = optimized_copy(source, "fp16").path
    assert copy.name == "model.fp16.onnx"
    out = _run(copy)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _run(source), atol=0.02)


def test_an_explicit_output_path_is_used(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    out = tmp_path / "elsewhere" / "small.onnx"
    out.parent.mkdir()
    assert optimized_copy(source, "int8", out).path == out
    assert out.is_file() and not (tmp_path / "model.int8.onnx").exists()


def test_bf16_has_no_onnx_conversion(tmp_path: Path) -> None:
    source = write_onnx_mlp(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="bf16"):
        optimized_copy(source, "bf16")


def test_serving_at_int8_loads_the_copy_and_logs_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_onnx_mlp(tmp_path / "model.onnx")
    config = ModelConfig("mlp", tmp_path, "onnx", file="model.onnx", precision="int8")
    with caplog.at_level(logging.INFO, logger="inferd.optimize"):
        backend, resolved = load_model(config)
    assert resolved.file == "model.onnx" and resolved.precision == "int8"
    assert [s.name for s in resolved.inputs] == ["input"]
    out = backend.predict({"input": X})["output"]
    np.testing.assert_allclose(out, _run(tmp_path / "model.int8.onnx"))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "inferd.optimize"]
    assert "model 'mlp' at int8 (onnxruntime dynamic int8 quantization" in line
    assert "max |diff|" in line and "at batch 64" in line
