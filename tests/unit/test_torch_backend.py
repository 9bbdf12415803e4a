"""The torch backend: TorchScript, torch.export programs and nn.Module factories."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inferd.backends.torch_backend import TorchBackend  # noqa: E402
from inferd.config import ModelConfig, TensorSpec  # noqa: E402
from inferd.errors import ConfigError  # noqa: E402
from inferd.repository import discover, load_model  # noqa: E402

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
Y = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
IN = (TensorSpec("x", "FP32", (-1, 4)),)
OUT = (TensorSpec("scores", "FP32", (-1, 2)),)
# TorchScript is deprecated in torch 2.13; these tests still cover users' existing .pt files.
jit_deprecated = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), y.sum(dim=1)


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "half": (x / 2).to(torch.bfloat16)}


def _config(folder: Path, **kwargs: Any) -> ModelConfig:
    return ModelConfig(name="t", path=folder, backend="torch", device="cpu", **kwargs)


def _export(module: torch.nn.Module, path: Path, *examples: torch.Tensor, dynamic: bool) -> None:
    shapes = [{0: torch.export.Dim("batch")} for _ in examples] if dynamic else None
    torch.export.save(torch.export.export(module, examples, dynamic_shapes=shapes), path)


@pytest.fixture(scope="module")
def two_heads_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    _export(TwoHeads().eval(), path, torch.zeros(2, 4), torch.zeros(2, 3), dynamic=True)
    return path


def test_exported_program_signature_and_outputs(two_heads_pt2: Path) -> None:
    backend, config = load_model(_config(two_heads_pt2.parent, file="model.pt2"))
    assert config.inputs == (TensorSpec("x", "FP32", (-1, 4)), TensorSpec("y", "FP32", (-1, 3)))
    assert config.outputs == (
        TensorSpec("output_0", "FP32", (-1, 2)),
        TensorSpec("output_1", "FP32", (-1,)),
    )
    out = backend.predict({"x": X, "y": Y})
    expected = TwoHeads()(torch.from_numpy(X), torch.from_numpy(Y))
    np.testing.assert_allclose(out["output_0"], expected[0].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], Y.sum(axis=1), rtol=1e-6)


def test_exported_program_takes_declared_output_names_and_casts_inputs(
    two_heads_pt2: Path,
) -> None:
    outputs = (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1,)))
    backend, config = load_model(_config(two_heads_pt2.parent, file="model.pt2", outputs=outputs))
    assert config.outputs == outputs
    out = backend.predict({"x": X.astype(np.float64), "y": Y})
    assert sorted(out) == ["a", "b"] and out["a"].dtype == np.float32


def test_exported_dict_outputs_static_batch_and_bfloat16(tmp_path: Path) -> None:
    _export(Named(), tmp_path / "model.pt2", torch.zeros(3, 2), dynamic=False)
    backend, config = load_model(_config(tmp_path, file="model.pt2"))
    assert config.inputs == (TensorSpec("x", "FP32", (3, 2)),)  # a static batch dim is kept
    assert [(s.name, s.datatype) for s in config.outputs] == [("double", "FP32"), ("half", "FP32")]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = backend.predict({"x": x})
    np.testing.assert_array_equal(out["double"], x * 2)
    assert out["half"].dtype == np.float32  # numpy has no bfloat16
    np.testing.assert_allclose(out["half"], x / 2, rtol=1e-2)


@jit_deprecated
def test_torchscript_with_declared_signature(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh()).eval()
    torch.jit.script(module).save(str(tmp_path / "model.pt"))
    backend, config = load_model(_config(tmp_path, file="model.pt", inputs=IN, outputs=OUT))
    assert (config.inputs, config.outputs) == (IN, OUT)
    out = backend.predict({"x": X})
    with torch.inference_mode():
        expected = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-6)


@jit_deprecated
def test_torchscript_without_declared_inputs_is_a_config_error(tmp_path: Path) -> None:
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(tmp_path / "model.pt"))
    with pytest.raises(ConfigError, match=r"does not declare its inputs; add \[\[inputs\]\]"):
        load_model(_config(tmp_path, file="model.pt"))


FACTORY = """
import torch

class Affine(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(4, width)

    def forward(self, x):
        x.mul_(0)  # writes to its input: the backend must not hand it a request's buffer
        return self.linear(x + 1)

def make_model(width=2):
    return Affine(width)
"""


def _factory_folder(folder: Path, width: int) -> dict[str, Any]:
    """Write model.py and weights.pt; returns the state dict."""
    (folder / "model.py").write_text(textwrap.dedent(FACTORY))
    torch.manual_seed(1)
    state = {"linear.weight": torch.randn(width, 4), "linear.bias": torch.randn(width)}
    torch.save(state, folder / "weights.pt")
    return state


def test_factory_with_state_dict_and_parameters(tmp_path: Path) -> None:
    state = _factory_folder(tmp_path, width=3)
    config = _config(
        tmp_path,
        entry_point="model.py:make_model",
        file="weights.pt",
        parameters={"width": 3},
        inputs=IN,
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
    )
    backend, _ = load_model(config)
    x = np.frombuffer(X.tobytes(), dtype=np.float32).reshape(X.shape)  # read-only, as decoded
    out = backend.predict({"x": x})
    expected = (torch.ones(1, 4) @ state["linear.weight"].T + state["linear.bias"]).numpy()
    np.testing.assert_allclose(out["y"], np.repeat(expected, 5, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(x, X)  # the model's in-place write did not reach the request


def test_factory_folder_is_discovered_with_its_weights(tmp_path: Path) -> None:
    _factory_folder(tmp_path, width=2)
    (tmp_path / "model.toml").write_text(
        'backend = "torch"\nentry_point = "model.py:make_model"\ndevice = "cpu"\n'
        '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 4]\n'
        '[[outputs]]\nname = "y"\ndatatype = "FP32"\nshape = [-1, 2]\n'
    )
    (entry,) = discover([tmp_path])
    assert entry.config is not None and entry.config.file == "weights.pt"
    backend, _ = load_model(entry.config)
    assert backend.predict({"x": X})["y"].shape == (5, 2)


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("def make_model():\n    return 3\n", {}, "returned int, expected a torch.nn.Module"),
        (FACTORY, {"file": "weights.pt"}, "does not fit the model"),
        (FACTORY, {"parameters": {"depth": 2}}, r"\[parameters\].*depth"),
    ],
)
def test_factory_errors(tmp_path: Path, source: str, kwargs: dict[str, Any], match: str) -> None:
    _factory_folder(tmp_path, width=5)  # weights for width 5; the factory makes width 2
    (tmp_path / "model.py").write_text(textwrap.dedent(source))
    backend = TorchBackend(_config(tmp_path, entry_point="model.py:make_model", **kwargs))
    with pytest.raises(ConfigError, match=r"model 't': .*" + match):
        backend.load()


def test_exported_program_with_wrong_declared_input_count(two_heads_pt2: Path) -> None:
    config = _config(two_heads_pt2.parent, file="model.pt2", inputs=IN)
    with pytest.raises(
        ConfigError, match=r"1 inputs are declared, but .*model\.pt2 takes 2 \(x, y\)"
    ):
        load_model(config)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda(two_heads_pt2: Path) -> None:
    config = ModelConfig(
        name="t", path=two_heads_pt2.parent, backend="torch", file="model.pt2", device="cuda"
    )
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_model(config)
