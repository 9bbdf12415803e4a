"""The sklearn, ONNX and python backends against tiny models built in each test's tmp_path."""

from __future__ import annotations

import operator
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skops.io
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from inferd.backends.onnx_backend import OnnxBackend
from inferd.backends.python_backend import PythonBackend
from inferd.backends.sklearn_backend import SklearnBackend
from inferd.config import BatchingConfig, ModelConfig, TensorSpec
from inferd.errors import ConfigError, ModelError
from inferd.repository import discover, load_model

RNG = np.random.default_rng(0)
X_TRAIN = RNG.normal(size=(60, 4))
X = RNG.normal(size=(7, 4)).astype(np.float32)


def _config(folder: Path, backend: str, **kwargs: Any) -> ModelConfig:
    return ModelConfig(name="m", path=folder, backend=backend, **kwargs)


# --- sklearn ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    y = np.digitize(X_TRAIN[:, 0], [-0.5, 0.5])  # three classes: 0, 1, 2
    return LogisticRegression().fit(X_TRAIN, y)


def test_sklearn_joblib_matches_estimator(tmp_path: Path, classifier: LogisticRegression) -> None:
    joblib.dump(classifier, tmp_path / "model.joblib")
    backend = SklearnBackend(_config(tmp_path, "sklearn", file="model.joblib"))
    backend.load()
    assert backend.signature() == (
        (TensorSpec("input", "FP32", (-1, 4)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))),
    )
    out = backend.predict({"input": X})
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], classifier.predict(X))
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(X), rtol=1e-6)


def test_sklearn_skops_string_classes_are_bytes(tmp_path: Path) -> None:
    y = np.where(X_TRAIN[:, 1] > 0, "cat", "dog")
    model = LogisticRegression().fit(X_TRAIN, y)
    skops.io.dump(model, tmp_path / "model.skops")
    backend = SklearnBackend(_config(tmp_path, "sklearn", file="model.skops"))
    backend.load()
    assert backend.signature()[1][0] == TensorSpec("label", "BYTES", (-1,))
    labels = backend.predict({"input": X})["label"]
    assert labels.dtype == object
    assert labels.tolist() == [s.encode() for s in model.predict(X)]


def test_sklearn_skops_rejects_untrusted_types(tmp_path: Path) -> None:
    skops.io.dump(FunctionTransformer(operator.add), tmp_path / "model.skops")
    backend = SklearnBackend(_config(tmp_path, "sklearn", file="model.skops"))
    with pytest.raises(ConfigError, match=r"'m'.*model\.skops.*_operator\.add"):
        backend.load()


def test_sklearn_regressor_and_declared_input_name(tmp_path: Path) -> None:
    model = LinearRegression().fit(X_TRAIN, X_TRAIN @ [1.0, 2.0, 0.0, -1.0])
    joblib.dump(model, tmp_path / "model.pkl")
    declared = TensorSpec("features", "FP32", (-1, 4))
    backend = SklearnBackend(_config(tmp_path, "sklearn", file="model.pkl", inputs=(declared,)))
    backend.load()
    assert backend.signature() == ((declared,), (TensorSpec("label", "FP64", (-1,)),))
    out = backend.predict({"features": X})
    assert set(out) == {"label"}
    np.testing.assert_allclose(out["label"], model.predict(X), rtol=1e-6)


# --- onnx ------------------------------------------------------------------------------------

WEIGHT = RNG.normal(size=(4, 2)).astype(np.float32)
BIAS = np.array([0.5, -1.0], dtype=np.float32)


def _write_onnx(path: Path) -> None:
    """y = x @ W + b with a symbolic batch dimension."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_onnx_signature_and_outputs(tmp_path: Path) -> None:
    _write_onnx(tmp_path / "model.onnx")
    backend = OnnxBackend(_config(tmp_path, "onnx", file="model.onnx", device="cpu"))
    backend.load()
    assert backend.signature() == (
        (TensorSpec("x", "FP32", (-1, 4)),),
        (TensorSpec("y", "FP32", (-1, 2)),),
    )
    # FP64 in: the backend casts to the graph's float.
    out = backend.predict({"x": X.astype(np.float64)})
    session = ort.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": X})
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["y"], X @ WEIGHT + BIAS, rtol=1e-5, atol=1e-6)


def test_onnx_broken_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ConfigError, match=r"'m'.*model\.onnx.*(?i:protobuf)"):
        load_model(_config(tmp_path, "onnx", file="model.onnx"))


def test_onnx_declared_input_must_exist(tmp_path: Path) -> None:
    _write_onnx(tmp_path / "model.onnx")
    config = _config(tmp_path, "onnx", file="model.onnx", inputs=(TensorSpec("z", "FP32", (-1,)),))
    with pytest.raises(ConfigError, match=r"'z'.*not inputs of the graph.*'x'"):
        load_model(config)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present"
)
def test_onnx_cuda_device_without_cuda(tmp_path: Path) -> None:
    _write_onnx(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
        load_model(_config(tmp_path, "onnx", file="model.onnx", device="cuda"))


def test_discovered_onnx_file_loads_with_its_signature(tmp_path: Path) -> None:
    _write_onnx(tmp_path / "affine.onnx")
    (entry,) = discover([tmp_path / "affine.onnx"])
    assert entry.config is not None
    backend, config = load_model(entry.config)
    assert (config.name, config.inputs[0].name, config.outputs[0].shape) == ("affine", "x", (-1, 2))
    assert backend.predict({"x": X})["y"].shape == (7, 2)


# --- python ----------------------------------------------------------------------------------

SCALE_MODEL = """
import numpy as np
from inferd.config import TensorSpec

class Scale:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [TensorSpec("y", "FP32", (-1, 4))]

    def __init__(self, factor=2.0):
        self.factor = factor
        self.loaded = False

    def load(self):
        self.loaded = True

    def predict(self, inputs):
        assert self.loaded
        return {"y": inputs["x"] * self.factor, "n": [len(inputs["x"])]}
"""


def _write(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


def test_python_entry_point_parameters_load_and_signature(tmp_path: Path) -> None:
    _write(tmp_path, "scale.py", SCALE_MODEL)
    config = _config(tmp_path, "python", entry_point="scale.py:Scale", parameters={"factor": 3})
    backend, completed = load_model(config)
    assert completed.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert completed.outputs == (TensorSpec("y", "FP32", (-1, 4)),)
    out = backend.predict({"x": X})
    np.testing.assert_allclose(out["y"], X * 3)
    np.testing.assert_array_equal(out["n"], [7])  # lists become arrays


def test_python_finds_the_one_predict_class_in_model_py(tmp_path: Path) -> None:
    _write(tmp_path, "model.py", "class Helper:\n    pass\n" + SCALE_MODEL)
    backend = PythonBackend(_config(tmp_path, "python"))
    backend.load()
    np.testing.assert_allclose(backend.predict({"x": X})["y"], X * 2)


def test_python_same_file_name_in_two_folders_stays_apart(tmp_path: Path) -> None:
    _write(
        tmp_path / "a", "model.py", "class A:\n    def predict(self, i):\n        return {'v': 1}\n"
    )
    _write(
        tmp_path / "b", "model.py", "class B:\n    def predict(self, i):\n        return {'v': 2}\n"
    )
    backends = [PythonBackend(_config(tmp_path / name, "python")) for name in "ab"]
    for backend in backends:
        backend.load()
    assert [int(b.predict({})["v"]) for b in backends] == [1, 2]


def test_python_relative_import_of_a_helper(tmp_path: Path) -> None:
    _write(tmp_path, "helpers.py", "OFFSET = 5\n")
    _write(
        tmp_path,
        "model.py",
        """
        from . import helpers

        class Offset:
            def predict(self, inputs):
                return {"y": inputs["x"] + helpers.OFFSET}
        """,
    )
    backend = PythonBackend(_config(tmp_path, "python"))
    backend.load()
    np.testing.assert_allclose(backend.predict({"x": X})["y"], X + 5)


def test_python_package_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "inferd_test_pkg_ep", "__init__.py", "")
    _write(tmp_path / "inferd_test_pkg_ep", "models.py", SCALE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _config(tmp_path, "python", entry_point="inferd_test_pkg_ep.models:Scale")
    backend, _ = load_model(config)
    np.testing.assert_allclose(backend.predict({"x": X})["y"], X * 2)


@pytest.mark.parametrize(
    ("files", "entry_point", "match"),
    [
        ({}, None, r"model\.py not found"),
        ({"model.py": "def f(:\n"}, None, r"model\.py: syntax error on line 1"),
        ({"model.py": "import no_such_module_x\n"}, None, r"importing .*model\.py failed"),
        ({"model.py": SCALE_MODEL}, "model.py:Nope", r"model\.py defines no 'Nope'"),
        ({"model.py": SCALE_MODEL + SCALE_MODEL.replace("Scale", "Two")}, None, "Scale, Two"),
        ({"model.py": "class A:\n    pass\n"}, None, r"exactly one class .*found: none"),
        ({"model.py": SCALE_MODEL}, "model.py", "expected 'file.py:Name'"),
        ({}, "no_such_pkg_x.mod:C", "cannot import module 'no_such_pkg_x.mod'"),
    ],
)
def test_python_load_errors_name_model_and_file(
    tmp_path: Path, files: dict[str, str], entry_point: str | None, match: str
) -> None:
    for name, source in files.items():
        _write(tmp_path, name, source)
    with pytest.raises(ConfigError, match=r"model 'm': .*" + match):
        PythonBackend(_config(tmp_path, "python", entry_point=entry_point)).load()


def test_python_parameters_that_do_not_fit(tmp_path: Path) -> None:
    _write(tmp_path, "model.py", SCALE_MODEL)
    config = _config(tmp_path, "python", parameters={"factr": 3})
    with pytest.raises(ConfigError, match=r"\[parameters\].*factr"):
        PythonBackend(config).load()


def test_python_class_signature_with_unknown_datatype(tmp_path: Path) -> None:
    _write(tmp_path, "model.py", SCALE_MODEL.replace('"FP32"', '"FP33"', 1))
    with pytest.raises(ConfigError, match=r"class Scale: key 'inputs\[0\]\.datatype' = 'FP33'"):
        load_model(_config(tmp_path, "python"))


def test_python_predict_must_return_a_dict(tmp_path: Path) -> None:
    _write(tmp_path, "model.py", "class A:\n    def predict(self, inputs):\n        return 1\n")
    backend = PythonBackend(_config(tmp_path, "python", batching=BatchingConfig(0)))
    backend.load()
    with pytest.raises(ModelError, match="returned int"):
        backend.predict({})
