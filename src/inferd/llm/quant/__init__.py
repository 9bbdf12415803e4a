"""Quantized and lower-precision LLM weights: int8 layers, checkpoints, measured reports.

``layers`` (int8 linear layers and ``quantize_model``) -> ``checkpoint`` (int8 folders, and
loading any checkpoint as asked) -> ``accuracy`` (KL, greedy agreement, decode speed) ->
``report`` (``optimize_checkpoint``, which ``inferd optimize`` calls). docs/quantization-llm.md
says what each option costs and buys.
"""

from __future__ import annotations

from inferd.llm.quant.accuracy import (
    Accuracy,
    GreedyDecoder,
    compare_greedy,
    decode_tokens_per_s,
    greedy_generate,
    greedy_matches,
    next_token_kl,
)
from inferd.llm.quant.checkpoint import load_checkpoint, save_cast, save_quantized
from inferd.llm.quant.layers import (
    DECODE_MAX_ROWS,
    DEQUANTIZED_MAX_WEIGHTS,
    PACKED_KERNEL_MAX_ROWS,
    QUANTIZATIONS,
    W8A8_MIN_ROWS,
    Int8Embedding,
    Int8Linear,
    dequantize_per_channel,
    quantize_model,
    quantize_per_channel,
    set_activations,
    weight_bytes,
)
from inferd.llm.quant.report import (
    EVAL_PROMPTS,
    PRECISIONS,
    QuantReport,
    Speed,
    evaluation_prompts,
    optimize_checkpoint,
)

__all__ = [
    "DECODE_MAX_ROWS",
    "DEQUANTIZED_MAX_WEIGHTS",
    "EVAL_PROMPTS",
    "PACKED_KERNEL_MAX_ROWS",
    "PRECISIONS",
    "QUANTIZATIONS",
    "W8A8_MIN_ROWS",
    "Accuracy",
    "GreedyDecoder",
    "Int8Embedding",
    "Int8Linear",
    "QuantReport",
    "Speed",
    "compare_greedy",
    "decode_tokens_per_s",
    "dequantize_per_channel",
    "evaluation_prompts",
    "greedy_generate",
    "greedy_matches",
    "load_checkpoint",
    "next_token_kl",
    "optimize_checkpoint",
    "quantize_model",
    "quantize_per_channel",
    "save_cast",
    "save_quantized",
    "set_activations",
    "weight_bytes",
]
