"""GPT-2: learned positions, pre-LayerNorm blocks, fused QKV, GELU (tanh) MLP.

Hugging Face stores GPT-2's projections as ``Conv1D`` weights ([in, out]);
``convert_hf_weights`` transposes them into ``nn.Linear`` layout ([out, in]) once, at load.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from inferd.llm.attention import attend
from inferd.llm.checkpoint import ModelArchConfig

_CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
# Causal-mask buffers that old checkpoints saved next to the weights.
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


class GPT2Attention(nn.Module):
    def __init__(self, config: ModelArchConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.scale = config.head_dim**-0.5
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_index + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1, self.num_heads, self.head_dim)
        q, k, v = (part.view(shape) for part in self.c_attn(x).chunk(3, dim=-1))
        out = attend(q, k, v, self.layer_index, self.scale)
        projected: torch.Tensor = self.c_proj(out.reshape(x.shape))
        return projected


class GPT2MLP(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.approximate = "none" if config.hidden_act == "gelu" else "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))
        return out


class GPT2Block(nn.Module):
    def __init__(self, config: ModelArchConfig, layer_index: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GPT2Attention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GPT2MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class GPT2LMHeadModel(nn.Module):
    """GPT-2 over a paged KV cache; ``forward`` returns sampled-row logits."""

    embedding_name: ClassVar[str] = "wte"
    """The token embedding's attribute: ``quant`` shares it with a tied, quantized LM head."""

    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.h = nn.ModuleList(GPT2Block(config, index) for index in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, logits_indices: torch.Tensor
    ) -> torch.Tensor:
        """input_ids, positions [T] -> fp32 logits [len(logits_indices), vocab], inside
        ``attention.step_context``."""
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x.index_select(0, logits_indices))
        if self.lm_head is None:
            return F.linear(x, self.wte.weight).float()
        logits: torch.Tensor = self.lm_head(x)  # an int8 head is a module, not a weight
        return logits.float()


def convert_hf_weights(
    weights: dict[str, torch.Tensor], config: ModelArchConfig
) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face GPT-2 state dict to this module's, transposing Conv1D weights."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith(_MASK_BUFFERS):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        key = name.removeprefix("transformer.")
        state[key] = tensor.t().contiguous() if key.endswith(_CONV1D_WEIGHTS) else tensor
    return state
