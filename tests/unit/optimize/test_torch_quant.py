"""torch models at int8, bf16 and fp16: nn.Module factories, exported programs, TorchScript."""

from __future__ import annotations

import dataclasses
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from torch import nn

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError
from inferd.optimize.torch_quant import (
    CastPrecision,
    ConvertedTorchBackend,
    convert,
    quantize_int8,
    serialized_size,
)
from inferd.repository import load_model

DynamicLinear = torch.ao.nn.quantized.dynamic.Linear
X = torch.from_numpy(np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32))

MODEL_PY = """\
import torch
from torch import nn


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))
"""


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def _close_to(reference: torch.Tensor, value: torch.Tensor, fraction: float) -> None:
    """Within ``fraction`` of the reference's range: int8 has 256 levels, bf16 8 mantissa bits."""
    scale = float(reference.abs().max())
    assert float((reference - value).abs().max()) <= fraction * scale


def _predict(model: object, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)  # type: ignore[operator]
    assert isinstance(out, torch.Tensor)
    return out


def test_int8_replaces_every_linear_and_stays_close() -> None:
    model = _mlp()
    converted = quantize_int8(model, "mlp")
    assert converted.method == "dynamic int8 quantization of 2 linear layers"
    modules = list(converted.model.modules())
    assert sum(isinstance(m, DynamicLinear) for m in modules) == 2
    assert not any(type(m) is nn.Linear for m in modules)
    assert all(type(m) is not DynamicLinear for m in model.modules())  # the original is kept
    _close_to(_predict(model, X), _predict(converted.model, X), 0.05)
    assert serialized_size(converted.model) < serialized_size(model)


def test_int8_of_an_exported_program_rewrites_its_linear_calls(tmp_path: Path) -> None:
    program = torch.export.export(_mlp(), (X,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "model.pt2")
    module = torch.export.load(tmp_path / "model.pt2").module()
    converted = quantize_int8(module, "exported")
    assert converted.method.endswith("of 2 linear layers")
    targets = [n.target for n in converted.model.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.linear.default not in targets
    assert not list(converted.model.parameters())  # the fp32 weights are gone
    _close_to(_predict(module, X), _predict(converted.model, X), 0.05)
    assert _predict(converted.model, X[:3]).shape == (3, 10)  # the batch axis stays dynamic
    assert serialized_size(converted.model) < serialized_size(module)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_int8_of_torchscript() -> None:
    scripted = torch.jit.script(_mlp())
    converted = quantize_int8(scripted, "scripted")
    assert converted.method.endswith("of 2 linear layers")
    assert "quantized::linear_dynamic" in str(converted.model.inlined_graph)
    _close_to(_predict(scripted, X), _predict(converted.model, X), 0.05)


def test_a_model_without_linear_layers_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"model 'convnet'.*linear layers.*Sequential"):
        quantize_int8(nn.Sequential(nn.Conv1d(1, 1, 3), nn.ReLU()), "convnet")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_casts_keep_fp32_in_and_out(precision: str, dtype: torch.dtype) -> None:
    model = _mlp()
    converted = convert(model, precision, "mlp")
    assert isinstance(converted.model, CastPrecision)
    assert all(p.dtype == dtype for p in converted.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = _predict(converted.model, X)
    assert out.dtype == torch.float32
    _close_to(_predict(model, X), out, 0.02)


def _factory_folder(tmp_path: Path) -> ModelConfig:
    (tmp_path / "model.py").write_text(textwrap.dedent(MODEL_PY))
    return ModelConfig(
        name="factory",
        path=tmp_path,
        backend="torch",
        entry_point="model.py:make_model",
        device="cpu",
        inputs=(TensorSpec("input", "FP32", (-1, 16)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 10)),),
        precision="int8",
    )


def test_the_backend_converts_after_loading_and_keeps_the_original(tmp_path: Path) -> None:
    backend = ConvertedTorchBackend(_factory_folder(tmp_path), "int8")
    backend.load()
    assert backend.original is not None
    inputs = {"input": X.numpy()}
    before = backend.original.predict(inputs)["scores"]
    after = backend.predict(inputs)["scores"]
    _close_to(torch.from_numpy(before), torch.from_numpy(after), 0.05)
    assert backend.size_after < backend.size_before
    backend.release_original()
    assert backend.original is None


def test_serving_at_int8_converts_on_load_and_logs_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _factory_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="inferd.optimize"):
        backend, resolved = load_model(config)
    reference, _ = load_model(dataclasses.replace(config, precision="fp32"))
    inputs = {"input": X.numpy()}
    np.testing.assert_allclose(
        backend.predict(inputs)["scores"], reference.predict(inputs)["scores"], atol=0.05
    )
    assert resolved.precision == "int8"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "inferd.optimize"]
    assert "model 'factory' at int8 (dynamic int8 quantization of 2 linear layers)" in line
    assert "at batch 1" in line and "at batch 64" in line and "random inputs" in line


def test_a_model_that_refuses_made_up_inputs_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Declared with a variable width, so the report's random inputs (width 8) do not fit.
    config = dataclasses.replace(
        _factory_folder(tmp_path), inputs=(TensorSpec("input", "FP32", (-1, -1)),)
    )
    with caplog.at_level(logging.INFO, logger="inferd.optimize"):
        backend, _ = load_model(config)
    assert backend.predict({"input": X.numpy()})["scores"].shape == (32, 10)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "inferd.optimize"]
    assert "accuracy not measured" in line and "not measured: RuntimeError" in line
