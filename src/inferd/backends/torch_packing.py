"""Linear layers whose weights are reordered once, at load, into oneDNN's blocked layout (CPU).

Used by the LLM engine (``llm/packed.py``) and by the torch backend for any model's
``nn.Linear`` layers and ``aten.linear`` calls (``pack_model``).

``F.linear`` on CPU hands oneDNN (bf16) or MKL (fp32) a plain row-major weight, and the library
reorders it into its blocked layout on every call: for the small row counts of a decode step
that reorder costs as much as the multiply. Reordering once at load, as PyTorch's own compiler
does when it freezes a model, made the GEMMs here 1.4-1.7x faster in bf16 at 8-64 rows, and
in fp32 1.6x at 32 rows (the 32,000-wide LM head 2x at 8 rows) but no faster at 8 rows of a
512-wide layer; in-process, fp32 decoding got 1.28x faster (BENCHMARKS.md).

bf16: the packed weight replaces the plain one (faster at every row count). fp32: below
``FP32_PACKED_MIN_ROWS`` rows MKL on the plain weight is faster (a single sequence decoding on
a small model lost 27% packed), so fp32 layers keep both, twice the linear weights' memory;
``pack_weights = false`` (in ``[llm]`` for an LLM, at the top of a torch model's
``model.toml``) keeps one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

logger = logging.getLogger("inferd.backends")

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
_BATCH_HINT = 32
"""Rows the layout is tuned for; any row count computes correctly."""
FP32_PACKED_MIN_ROWS = 4
"""Fewest rows an fp32 layer multiplies packed; fewer go to MKL on the plain weight."""


def packing_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether weights of ``dtype`` on ``device`` can be packed here."""
    return (
        torch.device(device).type == "cpu"
        and dtype in PACKABLE_DTYPES
        and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and (dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "relu": torch.relu,
}
"""Activations oneDNN applies to a packed layer's output in the same pass (``_linear_pointwise``
post-ops), with what computes them on the plain path; a separate ReLU after each layer of the
demo MLP cost 9% of its time at 32 rows."""


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward on a weight packed for oneDNN, then ``activation``; inputs of
    any leading shape."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
    ) -> None:
        super().__init__()
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.activation = activation
        self._plain_activation = ACTIVATIONS[activation]
        # Not a parameter or buffer: an opaque oneDNN tensor that state_dict cannot hold.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _BATCH_HINT)
        self.plain = weight.detach() if weight.dtype == torch.float32 else None
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.plain is not None and rows.shape[0] < FP32_PACKED_MIN_ROWS:
            return self._plain_activation(F.linear(x, self.plain, self.bias))
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            rows, self.packed, self.bias, self.activation, [], ""
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        then = f", then {self.activation}" if self.activation != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, packed{then}"


def agrees(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether oneDNN packs this layer's weight here and computes what ``F.linear`` does."""
    try:
        packed = PackedLinear(weight, bias)
        with torch.inference_mode():
            x = torch.randn(FP32_PACKED_MIN_ROWS + 1, weight.shape[1], dtype=weight.dtype)
            expected, got = F.linear(x, weight, bias), packed(x)
    except RuntimeError as exc:
        logger.info("oneDNN weight packing unavailable (%s); linear layers stay as loaded", exc)
        return False
    tolerance = 1e-3 if weight.dtype == torch.float32 else 5e-2
    scale = float(expected.abs().max()) or 1.0
    return bool((got.float() - expected.float()).abs().max() <= tolerance * scale)


def pack_model(model: nn.Module) -> int:
    """Pack a CPU model's fp32/bf16 linear layers in place; returns how many were packed.

    ``nn.Linear`` children are replaced; in a ``torch.export`` program's module (an FX graph)
    each ``aten.linear`` call on constant weights is rewritten to call a packed layer.
    Anything else (TorchScript, quantized layers, weights on a GPU, computed weights) is left
    as it is, and so is a model where oneDNN disagrees with ``F.linear`` on the first layer.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return 0
    graphs = [m for m in model.modules() if isinstance(m, fx.GraphModule)]
    return sum(_pack_graph(graph) for graph in graphs) + pack_linear_children(model)


def graph_constant(module: fx.GraphModule, arg: object) -> torch.Tensor | None:
    """The tensor a graph argument reads from the module's attributes, if it is one."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    value: object = module
    for part in str(arg.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def linear_constants(
    module: fx.GraphModule, node: fx.Node
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Weight and bias of an ``aten.linear`` call when both are constants; None otherwise."""
    args = list(node.args) + [None] * (3 - len(node.args))
    weight, bias = graph_constant(module, args[1]), graph_constant(module, args[2])
    if node.kwargs or weight is None or weight.dim() != 2 or (args[2] is not None and bias is None):
        return None  # computed weights cannot be prepared ahead of the call
    return weight, bias


def call_module_instead(
    module: fx.GraphModule, node: fx.Node, name: str, layer: nn.Module
) -> fx.Node:
    """Add ``layer`` to ``module`` as ``name`` and call it on ``node``'s input where the graph
    called ``node`` (an ``aten.linear``); returns the new call."""
    module.add_submodule(name, layer)
    with module.graph.inserting_before(node):
        call = module.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(call)
    module.graph.erase_node(node)
    return call


def pack_linear_children(model: nn.Module) -> int:
    """Replace ``model``'s packable ``nn.Linear`` layers with ``PackedLinear``; how many.

    Checked on one layer first: where oneDNN refuses or disagrees with ``F.linear``, nothing
    is replaced and the model computes as before.
    """
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and _packable(child.weight)
    ]
    if not targets or not agrees(targets[0][2].weight, targets[0][2].bias):
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear.from_linear(child))
    return len(targets)


def _pack_graph(module: fx.GraphModule) -> int:
    graph = module.graph
    linears = [
        (node, constants)
        for node in graph.nodes
        if node.op == "call_function" and node.target is torch.ops.aten.linear.default
        for constants in [linear_constants(module, node)]
        if constants is not None and _packable(constants[0])
    ]
    if not linears or not agrees(*linears[0][1]):
        return 0
    for index, (node, (weight, bias)) in enumerate(linears):
        name = f"_inferd_packed_linear_{index}"
        fused = _fusable_activation(node)
        activation = "none" if fused is None else _GRAPH_ACTIVATIONS[fused.target]
        packed = call_module_instead(module, node, name, PackedLinear(weight, bias, activation))
        if fused is not None:  # the activation's users read the packed layer's output
            fused.replace_all_uses_with(packed)
            graph.erase_node(fused)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    module.recompile()
    return len(linears)


_GRAPH_ACTIVATIONS: dict[object, str] = {torch.ops.aten.relu.default: "relu"}


def _fusable_activation(node: fx.Node) -> fx.Node | None:
    """The activation applied to ``node``'s output alone, if oneDNN can apply it instead."""
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    if user.op != "call_function" or user.target not in _GRAPH_ACTIVATIONS or user.kwargs:
        return None
    return user if user.args == (node,) else None


def _packable(weight: torch.Tensor) -> bool:
    return weight.dim() == 2 and packing_available(weight.device, weight.dtype)
