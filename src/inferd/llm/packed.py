"""The LLM's linear layers packed for oneDNN at load (CPU): ``backends/torch_packing.py`` does
the packing; here, which layers of a language model get it, a tied LM head included."""

from __future__ import annotations

from torch import nn

from inferd.backends.torch_packing import (
    FP32_PACKED_MIN_ROWS,
    PackedLinear,
    agrees,
    packing_available,
)
from inferd.llm.quant.layers import embedding_name

__all__ = ["FP32_PACKED_MIN_ROWS", "PackedLinear", "pack_linears", "packing_available"]


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
    if not targets or not agrees(targets[0][2].weight, targets[0][2].bias):
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear.from_linear(child))
    if hasattr(model, "lm_head") and model.lm_head is None:
        table = getattr(model, embedding_name(model)).weight
        model.lm_head = PackedLinear(table, None)
        return len(targets) + 1
    return len(targets)
