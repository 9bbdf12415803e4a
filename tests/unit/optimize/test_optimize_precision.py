"""The ``precision`` key of model.toml, what each backend accepts, and the copies' names."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.config import ModelConfig, model_config_from_dict
from inferd.errors import ConfigError
from inferd.optimize.precision import check_supported, copy_name, is_optimized_copy, unsupported
from inferd.repository import discover


def _folder(tmp_path: Path, toml: str, files: tuple[str, ...] = ("model.onnx",)) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.toml").write_text(toml)
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def test_precision_defaults_to_fp32_and_reads_each_value(tmp_path: Path) -> None:
    assert model_config_from_dict({}, tmp_path, "m", "model.toml")["precision"] == "fp32"
    for value in ("fp32", "bf16", "fp16", "int8"):
        kwargs = model_config_from_dict({"precision": value}, tmp_path, "m", "model.toml")
        assert kwargs["precision"] == value


@pytest.mark.parametrize("value", ["int4", "INT8", 8, True])
def test_a_bad_precision_names_the_file_and_the_key(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        model_config_from_dict({"precision": value}, tmp_path, "m", tmp_path / "model.toml")
    message = raised.value.message
    assert str(tmp_path / "model.toml") in message
    assert "'precision'" in message
    assert "fp32, bf16, fp16, int8" in message


def test_a_folder_with_a_bad_precision_is_reported_not_served(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 'precision = "int4"\n')
    (entry,) = discover([folder])
    assert entry.config is None
    assert entry.error is not None
    assert str(folder / "model.toml") in entry.error and "'precision'" in entry.error


def test_discovery_reads_precision_into_the_config(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 'precision = "int8"\n')
    (entry,) = discover([folder])
    assert entry.config is not None
    assert entry.config.precision == "int8"


@pytest.mark.parametrize(
    ("backend", "precision"),
    [("sklearn", "int8"), ("sklearn", "fp16"), ("python", "bf16"), ("onnx", "bf16")],
)
def test_backends_that_cannot_convert_raise_naming_model_and_file(
    tmp_path: Path, backend: str, precision: str
) -> None:
    config = ModelConfig("m", tmp_path, backend, source=tmp_path / "model.toml")
    assert unsupported(backend, precision) is not None
    with pytest.raises(ConfigError) as raised:
        check_supported(config, precision)
    message = raised.value.message
    assert "model 'm'" in message and str(tmp_path / "model.toml") in message
    assert f"the {backend} backend serves" in message


@pytest.mark.parametrize(
    ("backend", "precision"),
    [("torch", "int8"), ("torch", "bf16"), ("torch", "fp16"), ("onnx", "int8"), ("onnx", "fp16")],
)
def test_torch_and_onnx_convert(tmp_path: Path, backend: str, precision: str) -> None:
    assert unsupported(backend, precision) is None
    check_supported(ModelConfig("m", tmp_path, backend), precision)


def test_fp32_is_served_by_every_backend(tmp_path: Path) -> None:
    for backend in ("torch", "onnx", "sklearn", "python"):
        check_supported(ModelConfig("m", tmp_path, backend), "fp32")


def test_copy_names() -> None:
    assert copy_name("model.onnx", "int8") == "model.int8.onnx"
    assert copy_name("digits.v2.onnx", "fp16") == "digits.v2.fp16.onnx"


def test_a_copy_is_recognised_only_beside_its_original(tmp_path: Path) -> None:
    original, copy = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    assert is_optimized_copy(copy, [original, copy])
    assert not is_optimized_copy(copy, [copy])  # a model that happens to be named so
    assert not is_optimized_copy(original, [original, copy])
    assert not is_optimized_copy(tmp_path / "model.int4.onnx", [original])


def test_a_folder_keeps_one_model_after_its_copy_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.int8.json"):
        (folder / name).write_bytes(b"")
    (entry,) = discover([folder])
    assert entry.config is not None, entry.error
    assert entry.config.file == "model.onnx"
