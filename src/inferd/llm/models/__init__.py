"""LLM model implementations over the paged KV cache, and ``load_model`` to build one.

Each model's ``forward(input_ids, positions, batch)`` takes a step's flattened tokens and an
``attention.AttentionBatch`` and returns fp32 logits for the rows that sample.
"""

from __future__ import annotations

from inferd.llm.models.registry import MODELS, CausalLM, ModelSpec, load_model, resolve_dtype

__all__ = ["MODELS", "CausalLM", "ModelSpec", "load_model", "resolve_dtype"]
