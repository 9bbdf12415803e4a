"""The LLM's linear layers packed for oneDNN at load (CPU): ``backends/torch_packing.py`` does
the packing; here, what a language model adds to it, a tied LM head."""

from __future__ import annotations

from torch import nn

from inferd.backends.torch_packing import PackedLinear, pack_linear_children
from inferd.llm.quant.layers import embedding_name


def pack_linears(model: nn.Module) -> int:
    """Replace ``model``'s ``nn.Linear`` layers with ``PackedLinear`` in place; returns how many.

    An LM head tied to the token embedding (``lm_head = None``) gets a packed copy of the
    table too: the head is a decode step's largest GEMM, worth one more matrix of memory.
    Where oneDNN refuses or disagrees with ``F.linear``, nothing is replaced.
    """
    packed = pack_linear_children(model)
    if packed and hasattr(model, "lm_head") and model.lm_head is None:
        table = getattr(model, embedding_name(model)).weight
        model.lm_head = PackedLinear(table, None)
        return packed + 1
    return packed
