"""``inferd optimize`` and ``precision = "int8"`` end to end, on the demo's digits models.

The models are copies of the demo's, so the copies that optimising writes never land in the
demo repository other tests serve. Agreement is measured against the fp32 originals run
in-process on the held-out digits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from inferd.demo.data import held_out_digits
from tests.integration.server import ServerProcess

pytest.importorskip("torch")

import torch

MODELS = ("digits_torch", "digits_onnx")
MIN_AGREEMENT = 0.99


def _copy_models(demo_repo: Path, root: Path, precision: str | None) -> Path:
    for name in MODELS:
        shutil.copytree(demo_repo / name, root / name)
        if precision is not None:  # a top-level key goes before the toml's tables
            toml = root / name / "model.toml"
            toml.write_text(f'precision = "{precision}"\n' + toml.read_text())
    return root


def _inferd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferd", *args], capture_output=True, text=True, timeout=120
    )


def _fp32_predictions(folder: Path, x: np.ndarray) -> np.ndarray:
    if (folder / "model.onnx").is_file():
        session = ort.InferenceSession(str(folder / "model.onnx"))
        (out,) = session.run(None, {"input": x})
        classes: np.ndarray = np.asarray(out).argmax(axis=1)
        return classes
    module = torch.export.load(folder / "model.pt2").module()
    with torch.inference_mode():
        return np.asarray(module(torch.from_numpy(x)).argmax(dim=1).numpy())


def test_optimize_reports_size_speed_and_agreement(demo_repo: Path, tmp_path: Path) -> None:
    root = _copy_models(demo_repo, tmp_path, precision=None)
    result = _inferd(
        "optimize", *(str(root / name) for name in MODELS), "--precision", "int8", "--repeats", "3"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    for name, backend in (("digits_torch", "torch"), ("digits_onnx", "onnx")):
        assert f"✓ {name} ({backend}) -> int8" in out
    assert out.count("  size      ") == 2
    assert out.count("batch 64: ") == 2
    agreements = [float(a) / 100 for a in re.findall(r"agreement ([\d.]+)% with fp32", out)]
    assert len(agreements) == 2 and min(agreements) >= MIN_AGREEMENT
    assert out.count("on 450 held-out digits") == 2
    assert (root / "digits_onnx" / "model.int8.onnx").is_file()
    assert not (root / "digits_torch" / "model.int8.pt2").exists()  # torch converts on load


def test_optimize_explains_what_it_cannot_convert(demo_repo: Path) -> None:
    result = _inferd("optimize", str(demo_repo / "digits_sklearn"))
    assert result.returncode == 1
    assert "digits_sklearn: skipped (the sklearn backend serves fp32, not int8)" in result.stdout


def test_serving_at_int8_answers_like_fp32(demo_repo: Path, tmp_path: Path) -> None:
    root = _copy_models(demo_repo, tmp_path, precision="int8")
    x, _ = held_out_digits()
    with ServerProcess([root], log_dir=tmp_path) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            for name in MODELS:
                expected = _fp32_predictions(root / name, x)
                tensor = triton.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x, binary_data=True)
                result = client.infer(name, [tensor])
                output = client.get_model_metadata(name)["outputs"][0]["name"]
                predicted = result.as_numpy(output).argmax(axis=1)
                assert np.mean(predicted == expected) >= MIN_AGREEMENT, name
        finally:
            client.close()
        log = server.log()
    for name in MODELS:
        assert f"model '{name}' at int8" in log
        assert re.search(rf"model '{name}' at int8 .*agreement [\d.]+% with fp32", log)
    assert (root / "digits_onnx" / "model.int8.onnx").is_file()


def test_check_shows_the_precision(demo_repo: Path, tmp_path: Path) -> None:
    root = _copy_models(demo_repo, tmp_path, precision="int8")
    result = _inferd("check", str(root / "digits_onnx"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "precision=int8" in result.stdout
