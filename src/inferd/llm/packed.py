"""Linear layers whose weights are reordered once, at load, into oneDNN's blocked layout (CPU).

``F.linear`` on CPU hands oneDNN (bf16) or MKL (fp32) a plain row-major weight, and the library
reorders it into its blocked layout on every call: for the small row counts of a decode step
that reorder costs as much as the multiply. Reordering once at load, as PyTorch's own compiler
does when it freezes a model, made the GEMMs here 1.4-1.7x faster in bf16 at 8-64 rows, and
in fp32 1.6x at 32 rows (the 32,000-wide LM head 2x at 8 rows) but no faster at 8 rows of a
512-wide layer; in-process, fp32 decoding got 1.28x faster (BENCHMARKS.md).

bf16: the packed weight replaces the plain one (faster at every row count). fp32: below
``FP32_PACKED_MIN_ROWS`` rows MKL on the plain weight is faster (a single sequence decoding on
a small model lost 27% packed), so fp32 layers keep both, twice the linear weights' memory;
``pack_weights = false`` in ``[llm]`` keeps one copy.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from inferd.llm.quant.layers import embedding_name

logger = logging.getLogger("inferd.llm")

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


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward on a weight packed for oneDNN; inputs of any leading shape."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
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
            return F.linear(x, self.plain, self.bias)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            rows, self.packed, self.bias, "none", [], ""
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def pack_linears(model: nn.Module) -> int:
    """Replace ``model``'s ``nn.Linear`` layers with ``PackedLinear`` in place; returns how many.

    An LM head tied to the token embedding (``lm_head = None``) gets a packed copy of the
    table too: the head is a decode step's largest GEMM, worth one more matrix of memory.
    Checked on one layer first: where oneDNN refuses or disagrees with ``F.linear``, nothing
    is replaced and the model computes as before.
    """
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    if not targets or not _agrees(targets[0][2]):
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear.from_linear(child))
    if hasattr(model, "lm_head") and model.lm_head is None:
        table = getattr(model, embedding_name(model)).weight
        model.lm_head = PackedLinear(table, None)
        return len(targets) + 1
    return len(targets)


def _agrees(linear: nn.Linear) -> bool:
    try:
        packed = PackedLinear.from_linear(linear)
        with torch.inference_mode():
            x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype)
            expected, got = F.linear(x, linear.weight, linear.bias), packed(x)
    except RuntimeError as exc:
        logger.info("oneDNN weight packing unavailable (%s); linear layers stay as loaded", exc)
        return False
    tolerance = 1e-3 if linear.weight.dtype == torch.float32 else 5e-2
    scale = float(expected.abs().max()) or 1.0
    return bool((got.float() - expected.float()).abs().max() <= tolerance * scale)
