"""Read a Hugging Face checkpoint folder: ``config.json`` into a ``ModelArchConfig``, weights.

Accepts both config dialects: transformers 4 (``rope_theta`` + ``rope_scaling``,
``torch_dtype``) and transformers 5 (``rope_parameters``, ``dtype``). Weights come from one
``model.safetensors`` or from the shards that ``model.safetensors.index.json`` lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from inferd.errors import ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

ROPE_SCALING_TYPES = ("linear", "llama3")


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """How positions are stretched for a longer context than the model was trained on."""

    rope_type: str
    """``linear`` (positions divided by ``factor``) or ``llama3`` (per-frequency blend)."""
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True, slots=True)
class ModelArchConfig:
    """The shape of a decoder-only transformer, whatever its checkpoint called each field."""

    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    """``rms_norm_eps`` (Llama family) or ``layer_norm_epsilon`` (GPT-2)."""
    max_position_embeddings: int
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str | None = None
    """The dtype the checkpoint was saved in, e.g. ``bfloat16``."""
    sliding_window: int | None = None
    """Attention window of Mistral-style models; inferd attends fully, see ``max_model_len``."""
    scale_attn_by_inverse_layer_idx: bool = False
    """GPT-2 option: layer ``i`` divides its attention scores by ``i + 1`` as well."""
    quantization: str | None = None
    """``int8`` for a checkpoint ``inferd optimize`` quantized (see ``llm/quant.py``)."""

    @property
    def max_model_len(self) -> int:
        """Most tokens a sequence may hold: full attention is exact only inside the window."""
        if self.sliding_window is None:
            return self.max_position_embeddings
        return min(self.max_position_embeddings, self.sliding_window)

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads


def load_arch_config(path: str | Path) -> ModelArchConfig:
    """Parse ``path/config.json``; ``ConfigError`` naming the file for anything unsupported."""
    config_path = Path(path) / CONFIG_FILE
    raw = _read_json(config_path)
    architectures = raw.get("architectures") or []
    if len(architectures) != 1:
        raise ConfigError(f"{config_path}: 'architectures' = {architectures!r}: expected one name")
    architecture = architectures[0]
    parser = _PARSERS.get(architecture)
    if parser is None:
        raise ConfigError(
            f"{config_path}: architecture {architecture!r} is not supported; "
            f"supported: {', '.join(sorted(_PARSERS))}"
        )
    try:
        config = parser(raw, architecture)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{config_path}: cannot read {architecture} config: {exc!r}") from exc
    _validate(config, config_path)
    return config


def supported_architectures() -> tuple[str, ...]:
    return tuple(sorted(_PARSERS))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its Hugging Face name, on the CPU."""
    folder = Path(path)
    index_path = folder / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        files = _shard_files(index_path)
    elif (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    else:
        raise ConfigError(
            f"{folder}: no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} "
            "(only safetensors checkpoints are supported)"
        )
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def _shard_files(index_path: Path) -> list[Path]:
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConfigError(f"{index_path}: 'weight_map' is missing or empty")
    files = [index_path.parent / name for name in sorted(set(weight_map.values()))]
    for file in files:
        if not file.is_file():
            raise ConfigError(f"{index_path}: lists shard {file.name!r}, which does not exist")
    return files


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _parse_llama(raw: Mapping[str, Any], architecture: str) -> ModelArchConfig:
    num_heads = int(raw["num_attention_heads"])
    hidden_size = int(raw["hidden_size"])
    is_qwen2 = architecture == "Qwen2ForCausalLM"
    attention_bias = bool(raw.get("attention_bias", False))
    rope_theta, rope_scaling = _parse_rope(raw)
    return ModelArchConfig(
        architecture=architecture,
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden_size,
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
        head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
        intermediate_size=int(raw["intermediate_size"]),
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
        hidden_act=str(raw.get("hidden_act", "silu")),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=is_qwen2 or attention_bias,  # Qwen2 always has q/k/v biases, no o bias
        o_bias=attention_bias and not is_qwen2,
        mlp_bias=bool(raw.get("mlp_bias", False)),
        sliding_window=_sliding_window(raw, is_qwen2),
        **_common_fields(raw),
    )


def _parse_gpt2(raw: Mapping[str, Any], architecture: str) -> ModelArchConfig:
    hidden_size = int(raw["n_embd"])
    num_heads = int(raw["n_head"])
    return ModelArchConfig(
        architecture=architecture,
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden_size,
        num_layers=int(raw["n_layer"]),
        num_heads=num_heads,
        num_kv_heads=num_heads,
        head_dim=hidden_size // num_heads,
        intermediate_size=int(raw.get("n_inner") or 4 * hidden_size),
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        max_position_embeddings=int(raw.get("n_positions", 1024)),
        hidden_act=str(raw.get("activation_function", "gelu_new")),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        scale_attn_by_inverse_layer_idx=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
        **_common_fields(raw),
    )


def _common_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    eos = raw.get("eos_token_id")
    eos_list = [] if eos is None else eos if isinstance(eos, list) else [eos]
    bos = raw.get("bos_token_id")
    dtype = raw.get("dtype") or raw.get("torch_dtype")
    return {
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_ids": tuple(int(token_id) for token_id in eos_list),
        "torch_dtype": None if dtype is None else str(dtype),
        "quantization": _quantization(raw.get("quantization_config")),
    }


def _quantization(config: Any) -> str | None:
    """The weights' storage a ``quantization_config`` declares; only inferd's own is read."""
    if config is None:
        return None
    method = config.get("quant_method") if isinstance(config, dict) else None
    weights = config.get("weights") if isinstance(config, dict) else None
    if method != "inferd" or weights != "int8":
        raise ValueError(
            f"quantization_config {config!r} is not supported: only inferd's own int8 "
            "checkpoints (written by `inferd optimize --precision int8`) are"
        )
    return "int8"


def _sliding_window(raw: Mapping[str, Any], is_qwen2: bool) -> int | None:
    window = raw.get("sliding_window")
    if window is None or (is_qwen2 and not raw.get("use_sliding_window", False)):
        return None
    return int(window)


def _parse_rope(raw: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """RoPE base and scaling from either dialect (``rope_parameters`` is transformers 5)."""
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in ROPE_SCALING_TYPES:
        raise ValueError(f"rope scaling type {rope_type!r} (supported: {ROPE_SCALING_TYPES})")
    original = params.get("original_max_position_embeddings", raw.get("max_position_embeddings"))
    scaling = RopeScaling(
        rope_type=str(rope_type),
        factor=float(params["factor"]),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(original or 8192),
    )
    return theta, scaling


def _validate(config: ModelArchConfig, config_path: Path) -> None:
    if config.num_heads % config.num_kv_heads:
        raise ConfigError(
            f"{config_path}: num_attention_heads = {config.num_heads} is not a multiple of "
            f"num_key_value_heads = {config.num_kv_heads}"
        )
    supported_acts = _ACTIVATIONS[config.architecture]
    if config.hidden_act not in supported_acts:
        raise ConfigError(
            f"{config_path}: activation {config.hidden_act!r} is not supported; "
            f"supported: {', '.join(supported_acts)}"
        )


_PARSERS: dict[str, Callable[[Mapping[str, Any], str], ModelArchConfig]] = {
    "LlamaForCausalLM": _parse_llama,
    "MistralForCausalLM": _parse_llama,
    "Qwen2ForCausalLM": _parse_llama,
    "GPT2LMHeadModel": _parse_gpt2,
}

_GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu")
_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "LlamaForCausalLM": ("silu",),
    "MistralForCausalLM": ("silu",),
    "Qwen2ForCausalLM": ("silu",),
    "GPT2LMHeadModel": _GPT2_ACTIVATIONS,
}
