"""What int8 (and bf16 / fp16) buy against fp32 on the CPU: speed, size, and measured agreement.

    .venv/bin/python -m benchmarks.quantization [--threads 1] [--repeats 200]

1. Speed, on the demo ``mlp`` (512 -> 2048 -> 2048 -> 10, seeded random weights: the exported
   .pt2 the demo serves) converted by ``inferd.optimize`` exactly as serving converts it, and on
   the same weights as an ONNX graph through onnxruntime (fp32 against its int8 / fp16 copy).
   Each converted model is timed against its fp32 reference in the same run, the two called in
   turn, at batch 1 and 64: median, p99, and the ratio of medians.
2. Agreement, on the 450 held-out digits: the fraction of rows on which the converted model
   picks the same class as fp32, with both accuracies. The random-weight ``mlp`` is no
   classifier, so agreement is measured on the demo's digits_torch and digits_onnx and on an
   MLP of the ``mlp``'s exact shape trained here briefly on the digits (each image's 64 pixels
   repeated 8 times to fill its 512 inputs).

The process is pinned to ``--threads`` cores, one compute thread each by default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from benchmarks.harness import save
from inferd.demo import demo_repository
from inferd.demo.data import digits_split
from inferd.optimize.onnx_quant import optimized_copy
from inferd.optimize.torch_quant import convert, serialized_size

Run = Callable[[np.ndarray], np.ndarray]
BATCHES = (1, 64)
MLP_SHAPE = (512, 2048, 2048, 10)
REPEAT_PIXELS = MLP_SHAPE[0] // 64
TRAIN_EPOCHS = 3
TRAIN_BATCH = 64
SEED = 0


@dataclass
class SpeedRow:
    model: str
    precision: str
    batch: int
    fp32_median_ms: float
    fp32_p99_ms: float
    median_ms: float
    p99_ms: float
    speedup: float
    size_ratio: float


@dataclass
class AgreementRow:
    model: str
    precision: str
    rows: int
    agreement: float
    fp32_accuracy: float
    accuracy: float
    max_abs_diff: float


# --- running models ----------------------------------------------------------------------------


def torch_run(module: Any) -> Run:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = module(torch.from_numpy(x)).float().numpy()
            return out

    return run


def onnx_run(path: Path, threads: int) -> Run:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: x})[0]
        return out

    return run


def time_pair(reference: Run, candidate: Run, x: np.ndarray, repeats: int) -> list[list[float]]:
    """Milliseconds per call of both, called in turn so that noise hits both alike."""
    for _ in range(3):
        reference(x)
        candidate(x)
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, run in enumerate((reference, candidate)):
            start = time.perf_counter()
            run(x)
            times[i].append((time.perf_counter() - start) * 1e3)
    return times


# --- models ------------------------------------------------------------------------------------


def mlp_onnx(module: nn.Module, path: Path) -> Path:
    """The same weights as an ONNX graph: Gemm (transB) -> Relu -> ... -> Gemm."""
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    layers = sorted({k.rsplit(".", 1)[0] for k in state}, key=int)
    nodes, initializers, prev = [], [], "input"
    for i, layer in enumerate(layers):
        initializers += [
            numpy_helper.from_array(state[f"{layer}.weight"], f"w{i}"),
            numpy_helper.from_array(state[f"{layer}.bias"], f"b{i}"),
        ]
        out = "output" if i == len(layers) - 1 else f"h{i}"
        pre = out if i == len(layers) - 1 else f"p{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [pre], transB=1))
        if out != pre:
            nodes.append(helper.make_node("Relu", [pre], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", MLP_SHAPE[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", MLP_SHAPE[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def train_mlp_on_digits(x: np.ndarray, y: np.ndarray) -> nn.Module:
    """The mlp's exact shape, trained with Adam for a few epochs on the widened digits."""
    torch.manual_seed(SEED)
    sizes = MLP_SHAPE
    model = nn.Sequential(
        nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]), nn.ReLU(),
        nn.Linear(sizes[2], sizes[3]),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, labels = torch.from_numpy(widen(x)), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(TRAIN_EPOCHS):
        for rows in torch.split(torch.randperm(len(inputs), generator=generator), TRAIN_BATCH):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[rows]), labels[rows])
            torch.autograd.backward(loss)
            optimizer.step()
    return model.eval()


def widen(x: np.ndarray) -> np.ndarray:
    """Digits pixels scaled to 0-1 and repeated to fill the mlp's 512 inputs."""
    return np.tile(x / 16.0, REPEAT_PIXELS).astype(np.float32)


# --- the two measurements ----------------------------------------------------------------------


def speed_rows(
    name: str, reference: Run, candidates: dict[str, tuple[Run, float]], repeats: int
) -> list[SpeedRow]:
    rng = np.random.default_rng(SEED)
    rows = []
    for precision, (candidate, size_ratio) in candidates.items():
        for batch in BATCHES:
            x = rng.standard_normal((batch, MLP_SHAPE[0])).astype(np.float32)
            calls = repeats if batch == 1 else max(repeats // 2, 10)
            before, after = time_pair(reference, candidate, x, calls)
            fp32_median, median = float(np.median(before)), float(np.median(after))
            rows.append(SpeedRow(
                name, precision, batch, fp32_median, float(np.percentile(before, 99)), median,
                float(np.percentile(after, 99)), fp32_median / median, size_ratio,
            ))  # fmt: skip
    return rows


def agreement_row(
    model: str, precision: str, reference: Run, candidate: Run, x: np.ndarray, y: np.ndarray
) -> AgreementRow:
    before, after = reference(x), candidate(x)
    return AgreementRow(
        model, precision, len(x), float(np.mean(before.argmax(1) == after.argmax(1))),
        float(np.mean(before.argmax(1) == y)), float(np.mean(after.argmax(1) == y)),
        float(np.abs(before - after).max()),
    )  # fmt: skip


def mlp_speed(repo: Path, tmp: Path, threads: int, repeats: int) -> list[SpeedRow]:
    module = torch.export.load(repo / "mlp" / "model.pt2").module()
    size = serialized_size(module)
    torch_candidates = {}
    for precision in ("int8", "bf16", "fp16"):
        converted = convert(module, precision, "mlp").model
        torch_candidates[precision] = (torch_run(converted), serialized_size(converted) / size)
    rows = speed_rows("mlp (torch)", torch_run(module), torch_candidates, repeats)
    source = mlp_onnx(module, tmp / "mlp.onnx")
    onnx_candidates = {}
    for precision in ("int8", "fp16"):
        path = optimized_copy(source, precision).path
        ratio = path.stat().st_size / source.stat().st_size
        onnx_candidates[precision] = (onnx_run(path, threads), ratio)
    return rows + speed_rows("mlp (onnx)", onnx_run(source, threads), onnx_candidates, repeats)


def digits_agreement(repo: Path, tmp: Path, threads: int) -> list[AgreementRow]:
    split = digits_split()
    x, y = split.x_test, split.y_test
    rows = []
    exported = torch.export.load(repo / "digits_torch" / "model.pt2").module()
    trained = train_mlp_on_digits(split.x_train, split.y_train)
    for name, module, inputs in (
        ("digits_torch (64-128-10)", exported, x),
        ("mlp shape trained on digits", trained, widen(x)),
    ):
        for precision in ("int8", "bf16", "fp16"):
            converted = convert(module, precision, name).model
            rows.append(agreement_row(
                name, precision, torch_run(module), torch_run(converted), inputs, y
            ))  # fmt: skip
    source = tmp / "digits.onnx"
    source.write_bytes((repo / "digits_onnx" / "model.onnx").read_bytes())
    for precision in ("int8", "fp16"):
        copy = optimized_copy(source, precision).path
        rows.append(agreement_row(
            "digits_onnx (64-64-10)", precision, onnx_run(source, threads),
            onnx_run(copy, threads), x, y,
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="cores and compute threads")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls at batch 1")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    torch.set_num_threads(args.threads)
    repo = demo_repository()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        speed = mlp_speed(repo, tmp, args.threads, args.repeats)
        agreement = digits_agreement(repo, tmp, args.threads)
    print_tables(speed, agreement, args.threads)
    path = save("quantization", {"threads": args.threads, "speed": speed, "agreement": agreement})
    print(f"\nsaved {path}")


def print_tables(speed: list[SpeedRow], agreement: list[AgreementRow], threads: int) -> None:
    print(f"\nspeed on the CPU, {threads} thread(s); ms per call, fp32 and converted in one run")
    print(f"{'model':14} {'prec':5} {'batch':>5} {'fp32 p50':>9} {'fp32 p99':>9} "
          f"{'p50':>8} {'p99':>8} {'speedup':>8} {'size':>6}")  # fmt: skip
    for r in speed:
        print(f"{r.model:14} {r.precision:5} {r.batch:5d} {r.fp32_median_ms:9.3f} "
              f"{r.fp32_p99_ms:9.3f} {r.median_ms:8.3f} {r.p99_ms:8.3f} {r.speedup:7.2f}x "
              f"{r.size_ratio:5.2f}x")  # fmt: skip
    print("\nagreement with fp32 on the held-out digits")
    print(f"{'model':28} {'prec':5} {'rows':>5} {'agreement':>9} {'fp32 acc':>8} "
          f"{'acc':>7} {'max|diff|':>9}")  # fmt: skip
    for a in agreement:
        print(f"{a.model:28} {a.precision:5} {a.rows:5d} {a.agreement:9.2%} "
              f"{a.fp32_accuracy:8.4f} {a.accuracy:7.4f} {a.max_abs_diff:9.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
