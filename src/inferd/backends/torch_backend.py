"""The PyTorch backend: a ``torch.export`` program (.pt2), a TorchScript module (.pt), or an
``nn.Module`` built by a factory named in ``entry_point`` (with an optional state dict in ``file``).

Inputs are passed to ``forward`` positionally, in signature order. A tensor result is one output,
a tuple or list several (named from ``[[outputs]]``, else ``output`` / ``output_0, output_1, …``),
a dict is returned by its keys. Only a .pt2 program declares its own signature.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from inferd.backends.base import Tensors
from inferd.backends.loader import call_with_parameters, load_attribute, model_file
from inferd.backends.torch_packing import pack_model
from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError, InvalidRequest, ModelError, ModelNotReady

_TO_DATATYPE: Final = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}
_TO_TORCH: Final = {datatype: dtype for dtype, datatype in _TO_DATATYPE.items()}
PT_SUFFIXES: Final = (".pt", ".pth")

logger = logging.getLogger("inferd.backends")


class TorchBackend:
    """Serves a PyTorch model under ``torch.inference_mode``."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._model: Any = None
        self._device = torch.device("cpu")
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()
        self._input_dtypes: list[torch.dtype] = []

    def load(self) -> None:
        """Build or load the model on its device, in eval mode, linear weights packed on CPU."""
        self._load_unpacked()
        self._pack(self._model)

    def _load_unpacked(self) -> None:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self._device = _device(self.config)
        if self.config.entry_point is not None:
            model = self._load_factory(self.config.entry_point)
        else:
            model = self._load_file(model_file(self.config))
        if not self._input_dtypes:  # a .pt2 program has set the dtypes it takes
            self._input_dtypes = [self._torch_dtype(spec) for spec in self.config.inputs]
        self._inputs = self.config.inputs or self._inputs
        self._model = model

    def _pack(self, model: Any) -> None:
        if self.config.pack_weights and self._device.type == "cpu":
            packed = pack_model(model)
            if packed:
                logger.info(
                    "model %r: %d linear layers packed for oneDNN", self.config.name, packed
                )

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """A .pt2 program's inputs and outputs; empty for TorchScript and factories."""
        return self._inputs, self._outputs

    def predict(self, inputs: Tensors) -> Tensors:
        """Run ``forward`` on the inputs in signature order."""
        if self._model is None:
            raise ModelNotReady(f"model {self.config.name!r} is not loaded")
        tensors = [
            self._to_tensor(inputs, spec.name, dtype)
            for spec, dtype in zip(self._inputs, self._input_dtypes, strict=True)
        ]
        with torch.inference_mode():
            result = self._model(*tensors)
        return self._name_outputs(result)

    def _to_tensor(self, inputs: Tensors, name: str, dtype: torch.dtype) -> torch.Tensor:
        value = inputs.get(name)
        if value is None:
            raise InvalidRequest(f"model {self.config.name!r} needs input {name!r}")
        # from_numpy shares memory; a read-only request buffer must not be shared with a model
        # that may write in place, and torch cannot take negative strides.
        array = np.require(value, requirements=("C", "W"))
        return torch.from_numpy(array).to(device=self._device, dtype=dtype)

    def _name_outputs(self, result: Any) -> Tensors:
        if isinstance(result, dict):
            return {str(name): _to_numpy(value) for name, value in result.items()}
        values = list(result) if isinstance(result, tuple | list) else [result]
        names = [spec.name for spec in self.config.outputs or self._outputs]
        if not names:
            names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
        if len(names) != len(values):
            raise ModelError(
                f"model {self.config.name!r} returned {len(values)} outputs, but its signature "
                f"has {len(names)} ({', '.join(names)})"
            )
        return {name: _to_numpy(value) for name, value in zip(names, values, strict=True)}

    def _load_factory(self, entry_point: str) -> torch.nn.Module:
        factory = load_attribute(self.config, entry_point)
        if not callable(factory):
            raise ConfigError(
                f"model {self.config.name!r}: entry_point {entry_point!r} is not callable"
            )
        model = call_with_parameters(self.config, factory)
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"model {self.config.name!r}: {entry_point} returned "
                f"{type(model).__name__}, expected a torch.nn.Module"
            )
        if self.config.file is not None:
            self._load_state_dict(model, self.config.path / self.config.file)
        return model.to(self._device).eval()

    def _load_state_dict(self, model: torch.nn.Module, path: Path) -> None:
        if path.suffix.lower() not in PT_SUFFIXES:
            return  # e.g. the factory's own model.py, found as the folder's model file
        state = torch.load(path, map_location=self._device, weights_only=True)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(
                f"model {self.config.name!r}: the state dict in {path} does not fit the model "
                f"from {self.config.entry_point}: {e}"
            ) from None

    def _load_file(self, path: Path) -> Any:
        suffix = path.suffix.lower()
        if suffix == ".pt2":
            return self._load_exported(path)
        if suffix in PT_SUFFIXES:
            scripted = torch.jit.load(str(path), map_location=self._device)  # type: ignore[no-untyped-call]
            return scripted.eval()
        raise ConfigError(
            f"model {self.config.name!r}: {path} is not a .pt2 or TorchScript .pt file; "
            "for an nn.Module set entry_point = 'model.py:make_model'"
        )

    def _load_exported(self, path: Path) -> Any:
        program = torch.export.load(str(path))
        self._inputs, self._outputs = _exported_signature(program, self.config)
        self._input_dtypes = [
            _graph_value(program, name, self.config).dtype
            for name in program.graph_signature.user_inputs
        ]
        declared = self.config.inputs
        if declared and len(declared) != len(self._inputs):
            raise ConfigError(
                f"model {self.config.name!r}: {len(declared)} inputs are declared, but {path} "
                f"takes {len(self._inputs)} ({', '.join(s.name for s in self._inputs)})"
            )
        if self._device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self._device)
        # An exported module is already in the mode it was exported in; eval() is unsupported.
        return program.module()

    def _torch_dtype(self, spec: TensorSpec) -> torch.dtype:
        dtype = _TO_TORCH.get(spec.datatype)
        if dtype is None:
            raise ConfigError(
                f"model {self.config.name!r}: input {spec.name!r} has datatype "
                f"{spec.datatype}, which the torch backend does not take"
            )
        return dtype


def _device(config: ModelConfig) -> torch.device:
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ConfigError(
            f"model {config.name!r}: device = 'cuda' but torch sees no CUDA device "
            "(set device = 'auto' to fall back to the CPU)"
        )
    return torch.device("cuda" if cuda and config.device != "cpu" else "cpu")


def _exported_signature(
    program: torch.export.ExportedProgram, config: ModelConfig
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """User inputs and outputs read from the program's graph (symbolic dims become -1)."""
    signature = program.graph_signature
    inputs = tuple(
        _tensor_spec(name, _graph_value(program, name, config), config)
        for name in signature.user_inputs
    )
    values = [_graph_value(program, str(name), config) for name in signature.user_outputs]
    out_spec = program.call_spec.out_spec
    if out_spec is not None and out_spec.type is dict:
        names = [str(key) for key in out_spec.context]
    elif config.outputs and len(config.outputs) == len(values):
        names = [spec.name for spec in config.outputs]
    else:
        names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    outputs = tuple(
        _tensor_spec(name, value, config) for name, value in zip(names, values, strict=True)
    )
    return inputs, outputs


def _graph_value(
    program: torch.export.ExportedProgram, name: str, config: ModelConfig
) -> torch.Tensor:
    """The example (fake) tensor that the graph records for one of its values."""
    value = next((n.meta.get("val") for n in program.graph.nodes if n.name == name), None)
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"model {config.name!r}: {name!r} in the exported program is not a tensor ({value!r})"
        )
    return value


def _tensor_spec(name: str, value: torch.Tensor, config: ModelConfig) -> TensorSpec:
    datatype = "FP32" if value.dtype == torch.bfloat16 else _TO_DATATYPE.get(value.dtype)
    if datatype is None:
        raise ConfigError(
            f"model {config.name!r}: tensor {name!r} of the exported program has dtype "
            f"{value.dtype}, which has no v2 datatype"
        )
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, datatype, shape)


def _to_numpy(value: Any) -> np.ndarray:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.cpu().numpy()
