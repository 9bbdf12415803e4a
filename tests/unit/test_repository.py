"""Model discovery from paths, and load_model's wrapping and signature checks.

Discovery never opens model files, so most models here are empty files with the right suffix.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferd.config import BatchingConfig, ModelConfig, TensorSpec
from inferd.errors import ConfigError
from inferd.repository import ModelEntry, discover, load_model


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _toml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _by_name(entries: list[ModelEntry]) -> dict[str, ModelEntry]:
    return {e.name: e for e in entries}


def test_repository_of_model_folders(tmp_path: Path) -> None:
    _touch(tmp_path / "affine", "model.onnx")
    _touch(tmp_path / "digits", "model.skops")
    _touch(tmp_path / "echo", "model.py", "helpers.py", "__init__.py")
    _touch(tmp_path / "net", "model.pt2", "export_it.py")  # .py helpers beside a model file
    _touch(tmp_path / ".git", "x.py")
    _touch(tmp_path / "_scratch", "model.onnx")
    (tmp_path / "README.md").write_text("not a model")
    entries = _by_name(discover([tmp_path]))
    assert sorted(entries) == ["affine", "digits", "echo", "net"]
    found = {name: (e.config.backend, e.config.file) for name, e in entries.items() if e.config}
    assert found == {
        "affine": ("onnx", "model.onnx"),
        "digits": ("sklearn", "model.skops"),
        "echo": ("python", "model.py"),
        "net": ("torch", "model.pt2"),
    }
    assert all(e.error is None for e in entries.values())


def test_model_toml_overrides_and_declares(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "folder", "weights.joblib")
    toml = _toml(
        folder,
        """
        name = "renamed"
        instances = 2
        [batching]
        max_batch_size = 8
        send_ahead = false
        [[inputs]]
        name = "x"
        datatype = "FP32"
        shape = [-1, 3]
        """,
    )
    (entry,) = discover([folder])  # a model folder given directly
    assert entry.name == "renamed" and entry.error is None and entry.config is not None
    config = entry.config
    assert (config.backend, config.file, config.instances) == ("sklearn", "weights.joblib", 2)
    assert config.batching == BatchingConfig(max_batch_size=8, send_ahead=False)
    assert config.inputs == (TensorSpec("x", "FP32", (-1, 3)),)
    assert (config.path, config.source) == (folder, toml)


def test_backend_and_entry_point_need_no_model_file(tmp_path: Path) -> None:
    _toml(tmp_path / "pkg", 'backend = "python"\nentry_point = "some.module:Model"\n')
    (entry,) = discover([tmp_path])
    assert entry.config is not None
    assert (entry.config.backend, entry.config.file) == ("python", None)


def test_model_file_path(tmp_path: Path) -> None:
    path = _touch(tmp_path, "digits.joblib") / "digits.joblib"
    (entry,) = discover([path])
    assert entry.config == ModelConfig(
        name="digits", path=tmp_path, backend="sklearn", file="digits.joblib"
    )


@pytest.mark.parametrize(
    ("files", "toml", "match"),
    [
        ((), 'backend = "onnx"\nmax_batch = 3\n', r"model\.toml: unknown key 'max_batch'"),
        (
            ("model.onnx",),
            '[[inputs]]\nname = "x"\ndatatype = "FP33"\nshape = [-1]\n',
            r"model\.toml: key 'inputs\[0\]\.datatype' = 'FP33': expected one of",
        ),
        (("model.onnx",), "name = [", r"model\.toml: invalid TOML"),
        (
            ("model.onnx",),
            "[batching]\nsend_ahead = 1\n",
            r"key 'batching\.send_ahead' = 1: expected true or false",
        ),
        (("model.onnx",), 'file = "nope.onnx"\n', r"key 'file' = 'nope.onnx'"),
        (("a.onnx", "b.onnx"), None, r"several model files \(a\.onnx, b\.onnx\)"),
        (("notes.txt",), "", r"no model file found"),
        (("weights.bin",), 'file = "weights.bin"\n', r"cannot tell the backend of 'weights.bin'"),
    ],
)
def test_broken_model_folder_becomes_an_error_entry(
    tmp_path: Path, files: tuple[str, ...], toml: str | None, match: str
) -> None:
    _touch(tmp_path / "good", "model.onnx")
    _touch(tmp_path / "broken", *files)
    if toml is not None:
        _toml(tmp_path / "broken", toml)
    entries = _by_name(discover([tmp_path]))
    assert entries["good"].config is not None
    broken = entries["broken"]
    assert broken.config is None and broken.error is not None
    assert str(tmp_path / "broken") in broken.error
    assert re.search(match, broken.error), broken.error


def test_broken_folder_keeps_the_name_its_toml_gives(tmp_path: Path) -> None:
    _toml(tmp_path / "folder", 'name = "nice"\nbackend = "tensorflow"\n')
    (entry,) = discover([tmp_path])
    assert entry.name == "nice"
    assert entry.error is not None and "key 'backend' = 'tensorflow'" in entry.error


@pytest.mark.parametrize("name", ["missing", "missing.onnx"])
def test_nonexistent_path_raises(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"missing.*no such file or folder"):
        discover([tmp_path / name])


def test_not_a_model_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"notes\.txt: not a model file"):
        discover([_touch(tmp_path, "notes.txt") / "notes.txt"])


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no model found"):
        discover([tmp_path])


def test_duplicate_names_raise(tmp_path: Path) -> None:
    _touch(tmp_path / "repo" / "digits", "model.onnx")
    _touch(tmp_path / "other" / "digits", "model.joblib")
    with pytest.raises(ConfigError, match=r"two models are named 'digits'.*repo.*other"):
        discover([tmp_path / "repo", tmp_path / "other"])


# --- load_model ------------------------------------------------------------------------------

UNDECLARED = """
class Echo:
    def predict(self, inputs):
        return {"y": inputs["x"]}
"""


def _python_model(folder: Path, source: str, **kwargs: Any) -> ModelConfig:
    (folder / "model.py").write_text(textwrap.dedent(source))
    return ModelConfig(name="echo", path=folder, backend="python", file="model.py", **kwargs)


def test_load_model_completes_the_signature_from_the_config(tmp_path: Path) -> None:
    specs = (TensorSpec("x", "INT64", (-1, 2)),), (TensorSpec("y", "INT64", (-1, 2)),)
    config = _python_model(tmp_path, UNDECLARED, inputs=specs[0], outputs=specs[1])
    backend, completed = load_model(config)
    assert (completed.inputs, completed.outputs) == specs
    np.testing.assert_array_equal(backend.predict({"x": np.ones((1, 2))})["y"], [[1, 1]])


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_load_model_needs_a_signature(tmp_path: Path, kind: str) -> None:
    declared = {"outputs" if kind == "inputs" else "inputs": (TensorSpec("x", "FP32", (-1,)),)}
    config = _python_model(tmp_path, UNDECLARED, **declared)
    expected = rf"model 'echo': the model does not declare its {kind}; add \[\[{kind}\]\] to "
    with pytest.raises(ConfigError, match=expected + str(tmp_path / "model.toml")):
        load_model(config)


def test_batched_model_needs_a_batch_dimension(tmp_path: Path) -> None:
    scalar = (TensorSpec("x", "FP32", ()),)
    config = _python_model(tmp_path, UNDECLARED, inputs=scalar, outputs=scalar)
    with pytest.raises(ConfigError, match=r"input 'x' has no dimensions.*max_batch_size = 64"):
        load_model(config)
    unbatched = _python_model(
        tmp_path, UNDECLARED, inputs=scalar, outputs=scalar, batching=BatchingConfig(0)
    )
    assert load_model(unbatched)[1].inputs == scalar


def test_load_model_wraps_errors_from_the_model(tmp_path: Path) -> None:
    source = UNDECLARED + "    def load(self):\n        raise ValueError('weights are corrupt')\n"
    config = _python_model(tmp_path, source)
    with pytest.raises(ConfigError, match=r"model 'echo': cannot load .*model\.py: ValueError"):
        load_model(config)
