"""Hugging Face architecture name -> model class and weight conversion; ``load_model``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from inferd.errors import ConfigError
from inferd.llm.attention import AttentionBatch
from inferd.llm.checkpoint import ModelArchConfig, load_arch_config, load_weights
from inferd.llm.models import gpt2, llama

WeightConverter = Callable[[dict[str, torch.Tensor], ModelArchConfig], dict[str, torch.Tensor]]
"""Hugging Face state dict -> this package's module state dict."""


class CausalLM(Protocol):
    """What the runner calls: one step's tokens in, logits of the sampled rows out."""

    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch
    ) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model_class: Callable[[ModelArchConfig], nn.Module]
    convert_weights: WeightConverter


MODELS: dict[str, ModelSpec] = {
    "LlamaForCausalLM": ModelSpec(llama.LlamaForCausalLM, llama.convert_hf_weights),
    "MistralForCausalLM": ModelSpec(llama.LlamaForCausalLM, llama.convert_hf_weights),
    "Qwen2ForCausalLM": ModelSpec(llama.LlamaForCausalLM, llama.convert_hf_weights),
    "GPT2LMHeadModel": ModelSpec(gpt2.GPT2LMHeadModel, gpt2.convert_hf_weights),
}


def load_model(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, ModelArchConfig]:
    """Build the checkpoint's model in ``dtype`` (default: the checkpoint's) on ``device``.

    The model is built on the meta device and takes the loaded tensors as its parameters, so
    no random initialisation runs and the weights are materialised once.
    """
    config = load_arch_config(path)
    spec = MODELS.get(config.architecture)
    if spec is None:
        raise ConfigError(f"{path}: no model class for architecture {config.architecture!r}")
    if config.quantization is not None:
        raise ConfigError(
            f"{path}: the weights are {config.quantization}-quantized: "
            "load them with inferd.llm.quant.load_checkpoint (the engine does)"
        )
    target_dtype = resolve_dtype(dtype if dtype is not None else config.torch_dtype, path)
    state = spec.convert_weights(load_weights(path), config)
    with torch.device("meta"):
        model = spec.model_class(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match {config.architecture}: {exc}") from exc
    model = model.to(device=device, dtype=target_dtype)
    model.requires_grad_(False)
    return model.eval(), config


def resolve_dtype(dtype: torch.dtype | str | None, path: str | Path = "") -> torch.dtype:
    """A torch dtype from a dtype, its name (``bfloat16``, ``torch.float16``) or None (fp32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    name = dtype.removeprefix("torch.")
    resolved = _DTYPES.get(name)
    if resolved is None:
        raise ConfigError(f"{path}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    return resolved


_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}
