"""Linear weights packed at load by the torch backend: the same answers, linear calls replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inferd.backends.torch_packing import PackedLinear, pack_model, packing_available  # noqa: E402
from inferd.config import ModelConfig  # noqa: E402
from inferd.repository import load_model  # noqa: E402

pytestmark = pytest.mark.skipif(
    not packing_available("cpu", torch.float32), reason="this torch build has no oneDNN"
)


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU()
        )
        self.head = torch.nn.Linear(128, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class WeightFromInput(torch.nn.Module):
    """A linear call whose weight is computed: there is nothing constant to pack."""

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, w * 2)


class SkipAroundRelu(torch.nn.Module):
    """A linear output read twice: its ReLU cannot be folded into the layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return torch.relu(y) + y


def _linear_calls(module: Any) -> int:
    return _calls(module, torch.ops.aten.linear.default)


def _calls(module: Any, target: Any) -> int:
    return sum(n.target is target for n in module.graph.nodes)


def _export(module: torch.nn.Module, path: Path, *examples: torch.Tensor) -> Path:
    shapes = [{0: torch.export.Dim("batch")}] + [None] * (len(examples) - 1)
    torch.export.save(torch.export.export(module, examples, dynamic_shapes=shapes), path)
    return path


def _config(folder: Path, **kwargs: Any) -> ModelConfig:
    return ModelConfig(name="m", path=folder, backend="torch", device="cpu", **kwargs)


@pytest.fixture(scope="module")
def mlp_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlp")
    return _export(Mlp().eval(), folder / "model.pt2", torch.zeros(2, 64))


@pytest.mark.parametrize("rows", [1, 3, 4, 32, 100])
def test_exported_program_is_packed_and_answers_the_same(mlp_pt2: Path, rows: int) -> None:
    packed, _ = load_model(_config(mlp_pt2.parent, file="model.pt2"))
    plain, _ = load_model(_config(mlp_pt2.parent, file="model.pt2", pack_weights=False))
    assert _linear_calls(packed._model) == 0  # type: ignore[attr-defined]
    assert _linear_calls(plain._model) == 3  # type: ignore[attr-defined]
    # Both ReLUs are applied by oneDNN as the layers' post-op.
    assert _calls(packed._model, torch.ops.aten.relu.default) == 0  # type: ignore[attr-defined]
    x = {"x": np.random.default_rng(rows).normal(size=(rows, 64)).astype(np.float32)}
    expected, got = plain.predict(x)["output"], packed.predict(x)["output"]
    assert got.shape == (rows, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_module_from_a_factory_is_packed() -> None:
    model = Mlp().eval()
    x = torch.randn(16, 64)
    with torch.inference_mode():
        expected = model(x)
        assert pack_model(model) == 3
        got = model(x)
    assert isinstance(model.head, PackedLinear) and isinstance(model.body[0], PackedLinear)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_computed_weights_and_other_dtypes_are_left_alone(tmp_path: Path) -> None:
    path = _export(WeightFromInput(), tmp_path / "model.pt2", torch.zeros(2, 8), torch.zeros(3, 8))
    module = torch.export.load(str(path)).module()
    assert pack_model(module) == 0 and _linear_calls(module) == 1
    doubles = torch.nn.Linear(8, 8).double()
    assert pack_model(torch.nn.Sequential(doubles)) == 0


def test_an_activation_read_elsewhere_too_is_not_folded(tmp_path: Path) -> None:
    path = _export(SkipAroundRelu().eval(), tmp_path / "model.pt2", torch.zeros(2, 8))
    module = torch.export.load(str(path)).module()
    x = torch.randn(6, 8)
    with torch.inference_mode():
        expected = module(x)
        assert pack_model(module) == 1
        got = module(x)
    assert _calls(module, torch.ops.aten.relu.default) == 1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
