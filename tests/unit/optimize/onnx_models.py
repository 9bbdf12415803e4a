"""A small ONNX MLP written by hand (no torch), for the optimize tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = (16, 64, 10)


def write_onnx_mlp(path: Path, seed: int = 0) -> Path:
    """input (batch, 16) -> Gemm -> Relu -> Gemm -> output (batch, 10), seeded weights."""
    rng = np.random.default_rng(seed)
    names = ("input", "hidden", "output")
    initializers, nodes = [], []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        weight = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), f"b{i}"),
        ]
        out = names[i + 1] if i else "pre_relu"
        nodes.append(helper.make_node("Gemm", [names[i], f"w{i}", f"b{i}"], [out]))
        if i == 0:
            nodes.append(helper.make_node("Relu", ["pre_relu"], ["hidden"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIZES[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", SIZES[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
