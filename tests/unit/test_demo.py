"""The demo model repository: layout, configs, accuracy of every model, caching and rebuilds."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import skops.io

import inferd.demo
from inferd.config import MODEL_CONFIG_FILE, ModelConfig, model_config_from_dict, read_toml
from inferd.demo import build, demo_repository, held_out_digits, version_tag
from inferd.demo.build import MANIFEST_FILE

HAS_TORCH = importlib.util.find_spec("torch") is not None
MODEL_FILES = {
    "echo": {"model.py", MODEL_CONFIG_FILE},
    "digits_sklearn": {"model.skops", MODEL_CONFIG_FILE},
    "digits_onnx": {"model.onnx", MODEL_CONFIG_FILE},
    "digits_torch": {"model.pt2", MODEL_CONFIG_FILE},
    "mlp": {"model.pt2", MODEL_CONFIG_FILE},
}
BACKENDS = {
    "echo": "python",
    "digits_sklearn": "sklearn",
    "digits_onnx": "onnx",
    "digits_torch": "torch",
    "mlp": "torch",
}
TORCH_MODELS = {"digits_torch", "mlp"}
EXPECTED_MODELS = set(MODEL_FILES) if HAS_TORCH else set(MODEL_FILES) - TORCH_MODELS
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


@pytest.fixture(scope="module", autouse=True)
def _without_llm() -> Iterator[None]:
    """These tests build the demo many times: without the LLM (test_demo_llm.py has it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERD_DEMO_LLM", "0")
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One demo build per module, in a private cache dir that stays set for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield demo_repository()


def _accuracy(predicted: np.ndarray) -> float:
    _, y = held_out_digits()
    return float(np.mean(np.asarray(predicted) == y))


# --- layout and configs ------------------------------------------------------------------------


def test_repository_lives_in_the_cache_dir_under_the_version_tag(repo: Path) -> None:
    assert repo.parent.name == "demo"
    assert repo.name == version_tag()
    assert version_tag().startswith(f"v{inferd.demo.DEMO_VERSION}-")


def test_layout(repo: Path) -> None:
    folders = {p.name for p in repo.iterdir() if p.is_dir()}
    assert folders == EXPECTED_MODELS
    for name in EXPECTED_MODELS:
        assert {p.name for p in (repo / name).iterdir()} == MODEL_FILES[name]


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_model_toml_parses(repo: Path, name: str) -> None:
    folder = repo / name
    if name not in EXPECTED_MODELS:
        pytest.skip("torch is not installed")
    path = folder / MODEL_CONFIG_FILE
    kwargs = model_config_from_dict(read_toml(path), folder, default_name=name, source=path)
    config = ModelConfig(**kwargs, source=path)
    assert config.name == name
    assert config.backend == BACKENDS[name]
    assert config.batched
    assert config.inputs
    assert all(spec.shape[0] == -1 for spec in config.inputs + config.outputs)


def test_manifest(repo: Path) -> None:
    manifest = json.loads((repo / MANIFEST_FILE).read_text())
    assert set(manifest) == EXPECTED_MODELS
    for name, entry in manifest.items():
        assert entry["backend"] == BACKENDS[name]
        if name.startswith("digits_"):
            assert entry["accuracy"] > 0.9
        else:
            assert entry["accuracy"] is None


def test_held_out_digits_is_fixed() -> None:
    x, y = held_out_digits()
    x2, y2 = held_out_digits()
    assert x.dtype == np.float32
    assert x.shape == (450, 64)
    assert y.shape == (450,)
    assert x.min() >= 0 and x.max() <= 16
    assert set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


# --- the models --------------------------------------------------------------------------------


def test_echo_returns_its_input(repo: Path) -> None:
    spec = importlib.util.spec_from_file_location("demo_echo_model", repo / "echo" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    batch = np.arange(32, dtype=np.float32).reshape(2, 16)
    outputs = module.Echo({"unused": 1}).predict({"input": batch})
    assert list(outputs) == ["output"]
    assert outputs["output"] is batch


def test_sklearn_model(repo: Path) -> None:
    path = repo / "digits_sklearn" / "model.skops"
    assert skops.io.get_untrusted_types(file=path) == []
    model = skops.io.load(path)
    x, _ = held_out_digits()
    assert model.n_features_in_ == 64
    assert model.predict_proba(x[:1]).shape == (1, 10)
    assert _accuracy(model.predict(x)) > 0.9


def test_onnx_model(repo: Path) -> None:
    session = onnxruntime.InferenceSession(
        repo / "digits_onnx" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    (model_input,) = session.get_inputs()
    (model_output,) = session.get_outputs()
    assert (model_input.name, model_input.shape) == ("input", ["batch", 64])
    assert (model_output.name, model_output.shape) == ("probabilities", ["batch", 10])
    x, _ = held_out_digits()
    (probabilities,) = session.run(None, {"input": x})
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert session.run(None, {"input": x[:1]})[0].shape == (1, 10)
    assert _accuracy(probabilities.argmax(axis=1)) > 0.9


@needs_torch
def test_torch_model(repo: Path) -> None:
    import torch

    module = torch.export.load(repo / "digits_torch" / "model.pt2").module()
    x, _ = held_out_digits()
    with torch.inference_mode():
        logits = module(torch.from_numpy(x))
        assert module(torch.from_numpy(x[:1])).shape == (1, 10)
    assert logits.dtype == torch.float32
    assert _accuracy(logits.argmax(dim=1).numpy()) > 0.9


@needs_torch
def test_benchmark_mlp(repo: Path) -> None:
    import torch

    module = torch.export.load(repo / "mlp" / "model.pt2").module()
    with torch.inference_mode():
        for batch in (1, 3, 64):
            assert module(torch.ones(batch, 512)).shape == (batch, 10)


# --- caching -----------------------------------------------------------------------------------


def test_second_call_reuses_the_cache(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = (repo.stat().st_ino, (repo / MANIFEST_FILE).stat().st_mtime_ns)
    with caplog.at_level(logging.INFO, logger="inferd.demo"):
        assert demo_repository() == repo
    assert (repo.stat().st_ino, (repo / MANIFEST_FILE).stat().st_mtime_ns) == before
    assert "building" not in caplog.text


def test_rebuild_replaces_the_cache(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = repo.stat().st_ino
    with caplog.at_level(logging.INFO, logger="inferd.demo"):
        assert demo_repository(rebuild=True) == repo
    assert repo.stat().st_ino != before
    assert "building demo model repository" in caplog.text
    assert {p.name for p in repo.iterdir() if p.is_dir()} == EXPECTED_MODELS
    # Only the lock file and the finished build remain: no staging or old folders.
    assert {p.name for p in repo.parent.iterdir()} == {repo.name, f".{repo.name}.lock"}


def test_builds_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INFERD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "_torch_available", lambda: False)
    real_version = inferd.demo._version
    monkeypatch.setattr(
        inferd.demo,
        "_version",
        lambda package: None if package == "torch" else real_version(package),
    )
    with caplog.at_level(logging.INFO, logger="inferd.demo"):
        repo = demo_repository()
    assert repo.name.endswith("-notorch")
    assert {p.name for p in repo.iterdir() if p.is_dir()} == set(MODEL_FILES) - TORCH_MODELS
    assert set(json.loads((repo / MANIFEST_FILE).read_text())) == set(MODEL_FILES) - TORCH_MODELS
    assert "torch is not installed" in caplog.text


def _fake_build(calls: list[int], fail: bool = False) -> object:
    def build_repository(root: Path) -> dict[str, object]:
        calls.append(1)
        (root / "half").mkdir()
        time.sleep(0.2)  # long enough for a second builder to arrive mid-build
        if fail:
            raise RuntimeError("crash mid-build")
        (root / MANIFEST_FILE).write_text("{}\n")
        return {}

    return build_repository


def test_concurrent_builders_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    monkeypatch.setattr(build, "build_repository", _fake_build(calls))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(demo_repository())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and len(results) == 4
    assert (results[0] / MANIFEST_FILE).is_file()


def test_builds_on_a_thread_that_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's OpenMP keeps a worker pool per thread that trained or exported, for that
    # thread's life: the build must not leave one on the server's main thread.
    monkeypatch.setenv("INFERD_CACHE_DIR", str(tmp_path))
    built_on: list[threading.Thread] = []

    def build_repository(root: Path) -> dict[str, object]:
        built_on.append(threading.current_thread())
        (root / MANIFEST_FILE).write_text("{}\n")
        return {}

    monkeypatch.setattr(build, "build_repository", build_repository)
    assert (demo_repository() / MANIFEST_FILE).is_file()
    assert len(built_on) == 1 and built_on[0] is not threading.current_thread()
    assert not built_on[0].is_alive()


def test_crash_mid_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    monkeypatch.setattr(build, "build_repository", _fake_build(calls, fail=True))
    with pytest.raises(RuntimeError, match="crash mid-build"):
        demo_repository()
    parent = tmp_path / "demo"
    assert [p.name for p in parent.iterdir()] == [f".{version_tag()}.lock"]
    # The next call starts over instead of trusting the debris, and clears what a killed
    # builder (one that never reached its cleanup) would have left.
    killed = parent / f".{version_tag()}.x1y2z3.tmp"
    (killed / "half").mkdir(parents=True)
    monkeypatch.setattr(build, "build_repository", _fake_build(calls))
    repo = demo_repository()
    assert (repo / MANIFEST_FILE).is_file()
    assert len(calls) == 2
    assert {p.name for p in parent.iterdir()} == {repo.name, f".{repo.name}.lock"}
