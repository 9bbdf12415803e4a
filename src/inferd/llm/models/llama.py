"""The Llama family (Llama 2/3, Mistral, Qwen2): RMSNorm, RoPE, GQA attention, SwiGLU MLP.

Q, K and V share one fused projection, as do the MLP's gate and up, so that each is one GEMM;
``convert_hf_weights`` concatenates the checkpoint's separate tensors accordingly.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from inferd.llm.attention import attend
from inferd.llm.checkpoint import ModelArchConfig, RopeScaling


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, as the reference implementation does."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Per-pair rotation frequencies [head_dim // 2] in fp32, with scaling applied."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    return _llama3_inv_freq(inv_freq, scaling)


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    # Llama 3.1: slow (long-wavelength) pairs are divided by the factor, fast ones kept, and
    # the band between blended smoothly.
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates query/key pairs (first half with second half) by position-dependent angles."""

    def __init__(self, head_dim: int, theta: float, scaling: RopeScaling | None) -> None:
        super().__init__()
        # A plain attribute, not a buffer: ``model.to(bfloat16)`` must not round it.
        self.inv_freq = rope_inv_freq(head_dim, theta, scaling)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """cos and sin [T, 1, head_dim // 2], computed once per step for every layer."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        angles = positions.float()[:, None] * self.inv_freq[None, :]
        return angles.cos().to(dtype)[:, None, :], angles.sin().to(dtype)[:, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [T, H, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    x1, x2 = x.chunk(2, dim=-1)
    if torch.compiler.is_compiling():
        # The compiler fuses the plain expression into one loop (and cannot trace ``out=``
        # into a strided view).
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    # Written into one output with in-place ops: on CPU the temporaries of the plain
    # expression (four products and a cat) cost more than the arithmetic.
    out = torch.empty_like(x)
    out1, out2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-1)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin)
    return out


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelArchConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * self.kv_size, config.qkv_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.o_bias)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, ...]) -> torch.Tensor:
        q_size = self.num_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, self.kv_size, self.kv_size], dim=-1)
        cos, sin = cos_sin
        q = apply_rope(q.view(-1, self.num_heads, self.head_dim), cos, sin)
        k = apply_rope(k.view(-1, self.num_kv_heads, self.head_dim), cos, sin)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        out = attend(q, k, v, self.layer_index)
        projected: torch.Tensor = self.o_proj(out.reshape(-1, q_size))
        return projected


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        down: torch.Tensor = self.down_proj(F.silu(gate) * up)
        return down


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelArchConfig, layer_index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.self_attn = LlamaAttention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos_sin)
        out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return out


class LlamaForCausalLM(nn.Module):
    """A Llama-family decoder over a paged KV cache; ``forward`` returns sampled-row logits."""

    embedding_name: ClassVar[str] = "embed_tokens"
    """The token embedding's attribute: ``quant`` shares it with a tied, quantized LM head."""

    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, index) for index in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, logits_indices: torch.Tensor
    ) -> torch.Tensor:
        """input_ids, positions [T] -> fp32 logits [len(logits_indices), vocab], inside
        ``attention.step_context``."""
        x = self.embed_tokens(input_ids)
        cos_sin = self.rotary.cos_sin(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos_sin)
        # Only sampled rows reach the norm and LM head, the costliest GEMM of a decode step.
        x = self.norm(x.index_select(0, logits_indices))
        if self.lm_head is None:
            return F.linear(x, self.embed_tokens.weight).float()
        logits: torch.Tensor = self.lm_head(x)  # an int8 head is a module, not a weight
        return logits.float()


def convert_hf_weights(
    weights: dict[str, torch.Tensor], config: ModelArchConfig
) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face Llama-family state dict to this module's, fusing projections."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # a derived buffer some old checkpoints saved
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        state[name.removeprefix("model.")] = tensor
    for index in range(config.num_layers):
        prefix = f"layers.{index}."
        _fuse(state, prefix + "self_attn.", ("q_proj", "k_proj", "v_proj"), "qkv_proj")
        _fuse(state, prefix + "mlp.", ("gate_proj", "up_proj"), "gate_up_proj")
    return state


def _fuse(state: dict[str, torch.Tensor], prefix: str, parts: tuple[str, ...], fused: str) -> None:
    for kind in ("weight", "bias"):
        names = [f"{prefix}{part}.{kind}" for part in parts]
        if all(name in state for name in names):
            state[f"{prefix}{fused}.{kind}"] = torch.cat([state.pop(name) for name in names])
