"""``optimize_checkpoint``: convert an LLM checkpoint, measure it against the original, report.

``inferd optimize PATH --precision int8`` calls it for a Hugging Face folder. Size counts
every weight; speed is decode tokens/s of both models in the same run (interleaved rounds,
medians); accuracy is ``accuracy.compare_greedy`` over ``EVAL_PROMPTS`` continued 128 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch
from torch import nn

from inferd.errors import ConfigError
from inferd.llm.checkpoint import ModelArchConfig
from inferd.llm.device import compute_threads
from inferd.llm.models import load_model
from inferd.llm.quant.accuracy import Accuracy, compare_greedy, decode_tokens_per_s
from inferd.llm.quant.checkpoint import save_cast, save_quantized
from inferd.llm.quant.layers import QUANTIZATIONS, format_bytes, quantize_model, weight_bytes
from inferd.llm.tokenizer import Tokenizer

PRECISIONS: Final = {"int8": "int8", "w8a8": "w8a8", "bf16": "bfloat16", "fp16": "float16"}
"""What ``optimize_checkpoint`` converts to: int8 weights (measured as served with
``quantization = "int8"`` or ``"w8a8"``; the files are the same), or a cast of every weight."""
EVAL_PROMPTS: Final = (
    "The for statement",
    "A function definition",
    "The import system",
    "An exception is raised when",
    "The with statement",
    "Lists are mutable sequences",
    "A dictionary maps",
    "The while loop",
    "Classes provide a means of",
    "The return statement",
    "String methods",
    "The global statement",
    "Integers and floating point numbers",
    "A lambda expression",
    "Modules can be imported",
    "The yield expression",
)
"""The fixed prompt set of ``optimize_checkpoint``, for a checkpoint with a tokenizer."""


@dataclass(frozen=True, slots=True)
class Speed:
    """Decode tokens/s of the original and the converted model, measured in the same run."""

    batch_size: int
    original: float
    converted: float

    @property
    def ratio(self) -> float:
        return self.converted / self.original


@dataclass(frozen=True, slots=True)
class QuantReport:
    """What converting an LLM checkpoint bought: size, decode speed, accuracy."""

    source: str
    precision: str
    out: str | None
    linear_bytes: tuple[int, int]
    """Decoder layers' projections (weights, scales, biases): original, converted."""
    model_bytes: tuple[int, int]
    """Every weight, embedding and LM head included: original, converted."""
    speeds: tuple[Speed, ...]
    accuracy: Accuracy

    def to_text(self) -> str:
        """A few lines for the log and the terminal."""
        acc = self.accuracy
        written = f"written to {self.out}" if self.out else "not written (no --out)"
        speeds = ", ".join(
            f"batch {s.batch_size} {s.ratio:.2f}x ({s.original:.0f} -> {s.converted:.0f} tok/s)"
            for s in self.speeds
        )
        return "\n".join(
            [
                f"{self.source} -> {self.precision}: {written}",
                f"  weights: linear layers {_ratio(self.linear_bytes)}, "
                f"whole model {_ratio(self.model_bytes)}",
                f"  decode speed vs the original, same run: {speeds}",
                f"  accuracy over {acc.num_prompts} prompts x {acc.num_tokens} greedy tokens: "
                f"mean next-token KL {acc.mean_kl:.4f} nats, greedy agreement "
                f"{acc.greedy_agreement:.1%}, {acc.identical_sequences}/{acc.num_prompts} "
                "continuations identical",
            ]
        )


def optimize_checkpoint(
    src: Path,
    precision: str,
    out: Path | None,
    num_tokens: int = 128,
    batch_sizes: tuple[int, ...] = (1, 32),
    rounds: int = 5,
    threads: int = 1,
) -> QuantReport:
    """Convert checkpoint ``src`` to ``precision`` (int8, w8a8, bf16, fp16), measure, write.

    Accuracy: ``EVAL_PROMPTS`` (random ids without a tokenizer) continued ``num_tokens``
    greedy tokens. Speed: decode tokens/s at each of ``batch_sizes``, median of ``rounds``
    interleaved rounds, on ``threads`` threads (1: the steadiest ratio on a shared machine).
    The converted checkpoint is written to ``out`` when given.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"{src}: precision {precision!r}: expected one of {', '.join(PRECISIONS)}"
        )
    original, arch = load_model(src, "float32")
    converted = _convert(src, precision)
    with compute_threads(threads):
        accuracy = compare_greedy(
            original, converted, arch, evaluation_prompts(src, arch), num_tokens
        )
        speeds = tuple(
            Speed(size, *decode_tokens_per_s([original, converted], arch, size, rounds=rounds))
            for size in batch_sizes
        )
    if out is not None and precision in QUANTIZATIONS:
        save_quantized(converted, arch, src, out)
    elif out is not None:
        save_cast(src, out, PRECISIONS[precision])
    return QuantReport(
        source=str(src),
        precision=precision,
        out=None if out is None else str(out),
        linear_bytes=(weight_bytes(original, True), weight_bytes(converted, True)),
        model_bytes=(weight_bytes(original), weight_bytes(converted)),
        speeds=speeds,
        accuracy=accuracy,
    )


def _convert(src: Path, precision: str) -> nn.Module:
    if precision not in QUANTIZATIONS:
        return load_model(src, PRECISIONS[precision])[0]
    model, _ = load_model(src, "float32")
    quantize_model(model, precision)
    return model


def evaluation_prompts(folder: Path, arch: ModelArchConfig) -> list[list[int]]:
    """``EVAL_PROMPTS`` tokenized by the checkpoint's tokenizer, else fixed random ids."""
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_folder(folder)
        return [tokenizer.encode(prompt) for prompt in EVAL_PROMPTS]
    generator = torch.Generator().manual_seed(0)
    high = arch.vocab_size
    return [torch.randint(0, high, (8 + i,), generator=generator).tolist() for i in range(16)]


def _ratio(pair: tuple[int, int]) -> str:
    before, after = pair
    return f"{format_bytes(before)} -> {format_bytes(after)} ({after / before:.1%})"
