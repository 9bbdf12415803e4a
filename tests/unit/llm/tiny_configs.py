"""Shapes of the tiny random checkpoints the LLM tests write with ``save_pretrained``, a writer
of such a checkpoint, and an engine over one (torch is imported only by those functions)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferd.llm.engine import LLMEngine

LLAMA_SHAPE = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.1,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

GPT2_SHAPE = {
    "vocab_size": 256,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 256,
    "initializer_range": 0.2,  # smaller ones make greedy GPT-2 repeat one token forever
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def tiny_engine(path: Path, **overrides: object) -> LLMEngine:
    """An fp32 engine over the checkpoint in ``path``: 4-token blocks, 128 of them, 8 sequences;
    ``overrides`` are further ``EngineConfig`` fields."""
    import torch

    from inferd.llm.checkpoint import load_arch_config
    from inferd.llm.engine import EngineConfig, LLMEngine
    from inferd.llm.runner import kv_block_bytes

    config = EngineConfig(
        model_path=str(path),
        dtype="float32",
        block_size=4,
        kv_cache_bytes=128 * kv_block_bytes(load_arch_config(path), 4, torch.float32),
        max_num_seqs=8,
        **overrides,  # type: ignore[arg-type]
    )
    return LLMEngine.from_config(config)


def save_tiny_checkpoint(path: Path, architecture: str = "llama") -> None:
    """Write a tiny random ``llama`` or ``gpt2`` checkpoint (seed 0) to ``path``."""
    import torch
    import transformers

    config_class, shape = {
        "llama": (transformers.LlamaConfig, LLAMA_SHAPE),
        "gpt2": (transformers.GPT2Config, GPT2_SHAPE),
    }[architecture]
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config_class(**shape)).save_pretrained(path)
