"""The ONNX backend: an onnxruntime ``InferenceSession`` on CUDA when available, else on CPU.

The signature comes from the graph: ONNX element types map to v2 datatypes and symbolic or
unknown dimensions to -1. Outputs that are not tensors (sequences, maps) are not served.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from inferd.backends.base import Tensors
from inferd.backends.loader import model_file
from inferd.config import ModelConfig, TensorSpec, usable_cpus
from inferd.datatypes import to_numpy_dtype
from inferd.errors import ConfigError, InvalidRequest, ModelNotReady

logger = logging.getLogger(__name__)

MAX_INTRA_OP_THREADS: Final = 4
"""More threads per session rarely help small models and starve other instances."""

_ONNX_DATATYPES: Final = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxBackend:
    """Serves an ``.onnx`` graph through onnxruntime."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._session: Any = None
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()

    def load(self) -> None:
        """Create the session; a broken file raises ``ConfigError`` with onnxruntime's message."""
        path = model_file(self.config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads or min(
            usable_cpus(), MAX_INTRA_OP_THREADS
        )
        providers = _providers(self.config, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise ConfigError(f"model {self.config.name!r}: cannot load {path}: {e}") from None
        self._inputs = tuple(self._spec(arg, "input") for arg in session.get_inputs())
        self._outputs = tuple(self._tensor_outputs(session.get_outputs()))
        self._check_declared_inputs()
        self._session = session

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The graph's inputs and tensor outputs (empty before ``load``)."""
        return self._inputs, self._outputs

    def predict(self, inputs: Tensors) -> Tensors:
        """Run the graph; inputs are cast to the graph's types only where they differ."""
        if self._session is None:
            raise ModelNotReady(f"model {self.config.name!r} is not loaded")
        feeds = {spec.name: self._feed(inputs, spec) for spec in self._inputs}
        names = [spec.name for spec in self._outputs]
        results = self._session.run(names, feeds)
        return {name: _from_onnx(value) for name, value in zip(names, results, strict=True)}

    def _feed(self, inputs: Tensors, spec: TensorSpec) -> np.ndarray:
        value = inputs.get(spec.name)
        if value is None:
            raise InvalidRequest(f"model {self.config.name!r} needs input {spec.name!r}")
        if spec.datatype == "BYTES":
            # onnxruntime takes string tensors as str; v2 BYTES elements are bytes.
            flat = [v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel()]
            return np.array(flat, dtype=object).reshape(value.shape)
        return np.require(value, dtype=to_numpy_dtype(spec.datatype), requirements="C")

    def _spec(self, arg: Any, kind: str) -> TensorSpec:
        datatype = _ONNX_DATATYPES.get(arg.type)
        if datatype is None:
            raise ConfigError(
                f"model {self.config.name!r}: {kind} {arg.name!r} has ONNX type {arg.type}, "
                "which inferd cannot serve"
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
        return TensorSpec(arg.name, datatype, shape)

    def _tensor_outputs(self, args: list[Any]) -> list[TensorSpec]:
        specs = []
        for arg in args:
            if arg.type in _ONNX_DATATYPES:
                specs.append(self._spec(arg, "output"))
            else:
                logger.warning(
                    "model %r: output %r has ONNX type %s and is not served",
                    self.config.name,
                    arg.name,
                    arg.type,
                )
        if not specs:
            raise ConfigError(f"model {self.config.name!r}: the graph has no tensor outputs")
        return specs

    def _check_declared_inputs(self) -> None:
        known = {spec.name for spec in self._inputs}
        unknown = [spec.name for spec in self.config.inputs if spec.name not in known]
        if unknown:
            raise ConfigError(
                f"model {self.config.name!r}: declared input(s) {', '.join(map(repr, unknown))} "
                f"are not inputs of the graph; it takes {', '.join(map(repr, sorted(known)))}"
            )


def _providers(config: ModelConfig, available: list[str]) -> list[str]:
    cuda = "CUDAExecutionProvider" in available
    if config.device == "cuda" and not cuda:
        raise ConfigError(
            f"model {config.name!r}: device = 'cuda' but onnxruntime has no "
            "CUDAExecutionProvider here (install onnxruntime-gpu, or set device = 'auto')"
        )
    if config.device != "cpu" and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _from_onnx(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:
        flat = [v.encode() if isinstance(v, str) else v for v in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape)
    return array
