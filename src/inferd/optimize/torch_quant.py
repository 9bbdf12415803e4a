"""PyTorch models at another precision: dynamic int8 of the linear layers, or bf16 / fp16 casts.

int8 is dynamic quantization: each linear layer's weights are stored as int8 with one scale,
and activations are quantized per call from their observed range, so no calibration data is
needed. It uses ``torch.ao.quantization`` (fbgemm / x86 kernels). torch 2.13 marks that package
deprecated in favour of torchao, but torchao's eager int8 path measured slower on CPU (see
docs/quantization.md) and torchao is not a dependency, so inferd keeps the kernels that ship
with torch and silences the deprecation notice where it calls them.

The three kinds of torch model are quantized as follows: an ``nn.Module`` from a factory by
swapping its ``nn.Linear`` modules; a ``torch.export`` program (.pt2) by rewriting each
``aten.linear`` call on constant weights into a quantized module; TorchScript by
``quantize_dynamic_jit``. bf16 and fp16 cast the weights, cast floating inputs in and outputs
back to fp32, so the model's signature does not change.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from inferd.backends.torch_backend import TorchBackend
from inferd.backends.torch_packing import call_module_instead, linear_constants
from inferd.config import ModelConfig
from inferd.errors import ConfigError

CAST_DTYPES: Final = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, slots=True)
class Converted:
    """A converted model and a short description of what was done to it."""

    model: Any
    method: str


class ConvertedTorchBackend(TorchBackend):
    """The torch backend, with its model converted to ``precision`` right after loading.

    Until ``release_original`` the fp32 model stays available as ``original`` (a backend of
    its own), so the report can compare the two on the same inputs.
    """

    def __init__(self, config: ModelConfig, precision: str) -> None:
        super().__init__(config)
        self.precision = precision
        self.method = ""
        self.size_before = 0
        self.size_after = 0
        self.original: TorchBackend | None = None

    def load(self) -> None:
        """Load the fp32 model, then replace it with its converted copy."""
        self._load_unpacked()
        if self.precision == "int8" and self._device.type != "cpu":
            raise ConfigError(
                f"model {self.config.name!r}: precision = 'int8' (dynamic quantization) runs "
                f"on the CPU only, and this model loads on {self._device.type}; set "
                "device = 'cpu', or use precision = 'bf16' or 'fp16' on a GPU"
            )
        # Converting builds a new model; the fp32 one, packed as fp32 serving would have it,
        # stays the report's reference (a shallow copy of this backend shares it).
        converted = convert(self._model, self.precision, self.config.name)
        self.size_before = serialized_size(self._model)
        self.size_after = serialized_size(converted.model)
        self.method = converted.method
        self.original = copy.copy(self)
        self._pack(self._model)
        self._model = converted.model
        self._pack(self._model)  # bf16 layers pack too (int8 ones are left as they are)

    def release_original(self) -> None:
        """Drop the fp32 model once the report is made (it may be large)."""
        self.original = None


def convert(model: Any, precision: str, name: str) -> Converted:
    """A converted copy of ``model`` (left unchanged) at ``precision`` (bf16, fp16 or int8)."""
    if precision == "int8":
        return quantize_int8(model, name)
    dtype = CAST_DTYPES.get(precision)
    if dtype is None:
        raise ConfigError(f"model {name!r}: no torch conversion to precision {precision!r}")
    with _quiet():
        cast = copy.deepcopy(model).to(dtype)
    return Converted(CastPrecision(cast, dtype), f"weights cast to {precision}, fp32 in and out")


def quantize_int8(model: Any, name: str) -> Converted:
    """Dynamic int8 quantization of the model's linear layers (a new model)."""
    with _quiet():
        if isinstance(model, torch.jit.ScriptModule):
            quantized, count = _quantize_script(model)
        else:
            quantized, count = _quantize_module(model)
    if count == 0:
        raise ConfigError(
            f"model {name!r}: precision = 'int8' quantizes linear layers (nn.Linear, or "
            f"aten.linear in an exported program), and {type(model).__name__} has none"
        )
    plural = "s" if count != 1 else ""
    return Converted(quantized, f"dynamic int8 quantization of {count} linear layer{plural}")


def serialized_size(model: Any) -> int:
    """Bytes of the model's weights as torch saves them (TorchScript: the whole archive)."""
    buffer = io.BytesIO()
    with _quiet():
        if isinstance(model, torch.jit.ScriptModule):
            torch.jit.save(model, buffer)
        else:
            torch.save(model.state_dict(), buffer)
    return buffer.tell()


class CastPrecision(nn.Module):
    """Runs a model cast to ``dtype``: floating inputs are cast in, outputs back to fp32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *args: torch.Tensor) -> Any:
        cast = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        return _to_fp32(self.model(*cast))


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _to_fp32(v) for key, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_to_fp32(v) for v in value)
    return value


def _quantize_module(model: nn.Module) -> tuple[nn.Module, int]:
    copied = copy.deepcopy(model)
    if isinstance(copied, torch.fx.GraphModule):  # an exported program calls aten.linear
        _rewrite_graph_linears(copied)
    quantized = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        copied, {nn.Linear}, dtype=torch.qint8, inplace=True
    )
    count = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    return quantized, count


def _rewrite_graph_linears(module: torch.fx.GraphModule) -> int:
    """Turn each ``aten.linear(x, W, b)`` on constant weights into a dynamic int8 module call."""
    graph = module.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        linear = _linear_from_node(module, node)
        if linear is None:
            continue
        call_module_instead(module, node, f"_inferd_int8_linear_{count}", _quantized_linear(linear))
        count += 1
    if count:
        graph.eliminate_dead_code()
        module.delete_all_unused_submodules()
        _drop_unused_attributes(module)
        module.recompile()
    return count


def _linear_from_node(module: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Linear | None:
    constants = linear_constants(module, node)
    if constants is None:
        return None
    weight, bias = constants
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _quantized_linear(linear: nn.Linear) -> nn.Module:
    wrapped = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8
    )
    return wrapped[0]  # type: ignore[no-any-return]


def _drop_unused_attributes(module: torch.fx.GraphModule) -> None:
    """Delete the fp32 weights no node reads any more, so the model shrinks for real."""
    used = {str(n.target) for n in module.graph.nodes if n.op == "get_attr"}
    for name, _ in list(module.named_parameters()) + list(module.named_buffers()):
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            delattr(owner, attr)


def _quantize_script(model: torch.jit.ScriptModule) -> tuple[Any, int]:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic_jit

    quantized = quantize_dynamic_jit(model, {"": default_dynamic_qconfig})  # type: ignore[no-untyped-call]
    count = str(quantized.inlined_graph).count("quantized::linear_dynamic")
    return quantized, count


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation notices for the calls made here (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.(ao|jit)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*TorchScript")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*quantize_per_")
        # quantize_dynamic_jit moves the module with .cpu(), which reads .grad of non-leaves.
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*\.grad attribute")
        # Deep-copying an exported program's module trips a pytree notice inside torch.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec")
        yield
