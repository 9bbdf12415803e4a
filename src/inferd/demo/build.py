"""Builders for the demo model repository: one small function per model.

Each builder writes one model folder (its files and a ``model.toml``; the LLM's is a Hugging Face
folder instead) under the repository root and returns the model's manifest entry. Only
``build_repository`` is called from outside.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import onnx
import skops.io
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inferd.config import (
    MODEL_CONFIG_FILE,
    BatchingConfig,
    TensorSpec,
    demo_llm_enabled,
    demo_llm_train_seconds,
)
from inferd.demo import LLM_PACKAGES
from inferd.demo.data import DigitsSplit, digits_split

logger = logging.getLogger("inferd.demo")

MANIFEST_FILE: Final = "demo.json"
ONNX_OPSET: Final = 17
ONNX_IR_VERSION: Final = 8  # the oldest IR that carries opset 17; any onnxruntime >= 1.14 reads it
SEED: Final = 0
PIXEL_MAX: Final = 16.0
DIGITS_IN: Final = TensorSpec("input", "FP32", (-1, 64))
DIGITS_BATCHING: Final = BatchingConfig(max_batch_size=64, max_queue_delay_ms=0.0)
MLP_BATCHING: Final = BatchingConfig(max_batch_size=64, max_queue_delay_ms=1.0)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One line of ``demo.json``: the model's backend and held-out accuracy (None if no task)."""

    backend: str
    accuracy: float | None = None


Builder = Callable[[Path, DigitsSplit], ModelEntry]


def build_repository(root: Path) -> dict[str, ModelEntry]:
    """Build every demo model into ``root`` (an empty folder) and write ``demo.json``."""
    split = digits_split()
    builders: dict[str, Builder] = {
        "echo": build_echo,
        "digits_sklearn": build_digits_sklearn,
        "digits_onnx": build_digits_onnx,
    }
    if _torch_available():
        builders |= {"digits_torch": build_digits_torch, "mlp": build_mlp}
    else:
        logger.warning(
            "torch is not installed: skipping demo models digits_torch and mlp "
            "(pip install 'inferd[torch]' to get them)"
        )
    if demo_llm_enabled():
        builders |= _llm_builders()
    manifest = {
        name: _timed(name, builder, root / name, split) for name, builder in builders.items()
    }
    manifest_data = {name: asdict(entry) for name, entry in manifest.items()}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest_data, indent=2) + "\n")
    return manifest


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _llm_builders() -> dict[str, Builder]:
    """The demo LLM's builder, or none (with a warning) without torch and transformers."""
    if all(importlib.util.find_spec(package) for package in LLM_PACKAGES):
        return {"tiny_llama": build_tiny_llama}
    logger.warning(
        "torch or transformers is not installed: skipping the demo LLM tiny_llama "
        "(pip install 'inferd[torch]' transformers to get it)"
    )
    return {}


def _timed(name: str, builder: Builder, folder: Path, split: DigitsSplit) -> ModelEntry:
    start = time.perf_counter()
    folder.mkdir()
    entry = builder(folder, split)
    accuracy = "" if entry.accuracy is None else f", held-out accuracy {entry.accuracy:.4f}"
    logger.info(
        "built demo model %s (%s) in %.2f s%s",
        name,
        entry.backend,
        time.perf_counter() - start,
        accuracy,
    )
    return entry


# --- the models ------------------------------------------------------------------------------


def build_echo(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``echo``: a python model that returns its input, to measure pure serving overhead."""
    source = resources.files(__package__).joinpath("echo_model.py")
    (folder / "model.py").write_text(source.read_text())
    spec = TensorSpec("input", "FP32", (-1, 16))
    write_model_toml(
        folder,
        # Thread isolation: echo measures the server's own overhead, and a process hop per
        # batch is not the server's overhead but the price of isolation (BENCHMARKS.md has both).
        {
            "name": "echo",
            "backend": "python",
            "entry_point": "model.py:Echo",
            "isolation": "thread",
        },
        BatchingConfig(max_batch_size=256, max_queue_delay_ms=0.0),
        (spec,),
        (TensorSpec("output", "FP32", (-1, 16)),),
    )
    return ModelEntry("python")


def build_digits_sklearn(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``digits_sklearn``: standardised logistic regression, saved with skops."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(split.x_train, split.y_train)
    skops.io.dump(model, folder / "model.skops")
    header = {"name": "digits_sklearn", "backend": "sklearn", "file": "model.skops"}
    # Outputs are left to the backend, which names what predict / predict_proba return.
    write_model_toml(folder, header, DIGITS_BATCHING, (DIGITS_IN,), ())
    return ModelEntry("sklearn", _score(model.predict(split.x_test), split))


def build_digits_onnx(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``digits_onnx``: an sklearn MLP written out as an ONNX graph by hand (no torch needed)."""
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=120, random_state=SEED)
    with warnings.catch_warnings():
        # 120 Adam epochs reach ~97 % held out; the optimiser has not fully converged by then.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(split.x_train / PIXEL_MAX, split.y_train)
    path = folder / "model.onnx"
    onnx.save(_onnx_mlp(mlp), path)
    write_model_toml(
        folder,
        {"name": "digits_onnx", "backend": "onnx", "file": "model.onnx"},
        DIGITS_BATCHING,
        (DIGITS_IN,),
        (TensorSpec("probabilities", "FP32", (-1, 10)),),
    )
    return ModelEntry("onnx", _onnx_accuracy(path, split))


def build_digits_torch(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``digits_torch``: a 64 -> 128 -> 10 MLP trained on the digits, as a torch.export .pt2."""
    from inferd.demo import torch_models

    accuracy = torch_models.export_digits_mlp(split, folder / "model.pt2")
    write_model_toml(
        folder,
        {"name": "digits_torch", "backend": "torch", "file": "model.pt2"},
        DIGITS_BATCHING,
        (DIGITS_IN,),
        (TensorSpec("logits", "FP32", (-1, 10)),),
    )
    return ModelEntry("torch", accuracy)


def build_mlp(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``mlp``: the 512 -> 2048 -> 2048 -> 10 benchmark MLP with seeded random weights."""
    from inferd.demo import torch_models

    torch_models.export_benchmark_mlp(folder / "model.pt2")
    write_model_toml(
        folder,
        {"name": "mlp", "backend": "torch", "file": "model.pt2"},
        # A free replica waits up to 1 ms for a fuller batch: a row costs 119 us at 32 rows
        # and 92 at 64 (packed, one thread), so under load the wait pays for itself.
        MLP_BATCHING,
        (TensorSpec("input", "FP32", (-1, 512)),),
        (TensorSpec("output", "FP32", (-1, 10)),),
    )
    return ModelEntry("torch")


def build_tiny_llama(folder: Path, split: DigitsSplit) -> ModelEntry:
    """``tiny_llama``: a small Llama trained on Python's own docs, as a Hugging Face folder."""
    from inferd.demo import llm

    seconds = demo_llm_train_seconds()
    logger.info(
        "training the demo LLM tiny_llama for %g s (INFERD_DEMO_LLM_TRAIN_S sets how long, "
        "INFERD_DEMO_LLM=0 leaves it out)",
        seconds,
    )
    llm.build_tiny_llama(folder, seconds)
    return ModelEntry("llm")


# --- helpers ---------------------------------------------------------------------------------


def _score(predicted: np.ndarray, split: DigitsSplit) -> float:
    return round(float(np.mean(predicted == split.y_test)), 4)


def _onnx_mlp(mlp: MLPClassifier) -> onnx.ModelProto:
    """input -> Gemm -> Relu -> Gemm -> Softmax, the pixel scale folded into the first Gemm."""
    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    initializers = [
        numpy_helper.from_array(w1 / np.float32(PIXEL_MAX), "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="inferd.demo",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _onnx_accuracy(path: Path, split: DigitsSplit) -> float:
    """Score the saved file with onnxruntime, so a broken graph cannot pass as accurate."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": split.x_test})
    return _score(probabilities.argmax(axis=1), split)


def write_model_toml(
    folder: Path,
    header: dict[str, str],
    batching: BatchingConfig,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> None:
    """Write ``model.toml`` in the format ``inferd.config`` documents."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in header.items()]
    lines += [
        "",
        "[batching]",
        f"max_batch_size = {batching.max_batch_size}",
        f"max_queue_delay_ms = {batching.max_queue_delay_ms!r}",
    ]
    for table, specs in (("inputs", inputs), ("outputs", outputs)):
        for spec in specs:
            lines += ["", f"[[{table}]]", f"name = {json.dumps(spec.name)}"]
            lines += [f"datatype = {json.dumps(spec.datatype)}", f"shape = {list(spec.shape)}"]
    (folder / MODEL_CONFIG_FILE).write_text("\n".join(lines) + "\n")
