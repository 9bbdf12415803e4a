"""What quantization costs in accuracy and buys in speed, measured on the same contexts.

``GreedyDecoder`` runs a fixed batch of sequences through a model, one call per step, over its
own paged KV cache. Unlike the engine, it can feed a model tokens it did not choose (teacher
forcing), so ``compare_greedy`` puts a candidate and its reference on the very same contexts:
the mean KL divergence of their next-token distributions, and how often both pick the same
greedy token. It then lets the candidate run free and counts identical continuations.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from inferd.llm.attention import (
    allocate_kv_cache,
    allocate_kv_scales,
    build_attention_batch,
    step_context,
)
from inferd.llm.checkpoint import ModelArchConfig


def next_token_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || candidate) in nats for each row of next-token logits [N, vocab]."""
    ref = F.log_softmax(reference_logits.float(), dim=-1)
    cand = F.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - cand)).sum(dim=-1)


def greedy_matches(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per row, whether both pick the same greedy token."""
    return reference_logits.argmax(dim=-1) == logits.argmax(dim=-1)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One sequence's tokens of a step, as ``attention.ChunkLike`` describes it."""

    request_id: str
    positions: tuple[int, ...]
    slot_mapping: tuple[int, ...]
    block_table: tuple[int, ...]
    samples: bool = True


class GreedyDecoder:
    """A fixed batch of sequences over its own KV cache, one model call per step.

    The measuring harness: unlike the engine, it can feed a model tokens it did not choose
    (teacher forcing), so two models are compared on the very same contexts.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: ModelArchConfig,
        num_seqs: int,
        max_len: int,
        kv_cache_dtype: str = "auto",
    ) -> None:
        """``kv_cache_dtype``: ``auto`` (the model's dtype) or ``int8``, as the engine's."""
        self.model = model
        self.block_size = 16
        self.blocks_per_seq = -(-max_len // self.block_size)
        param = next(model.parameters())
        self.device = param.device
        self.kv_cache = allocate_kv_cache(
            arch.num_layers,
            num_seqs * self.blocks_per_seq,
            self.block_size,
            arch.num_kv_heads,
            arch.head_dim,
            torch.int8 if kv_cache_dtype == "int8" else param.dtype,
            param.device,
        )
        self.kv_scales = allocate_kv_scales(self.kv_cache) if kv_cache_dtype == "int8" else None
        self.lengths = [0] * num_seqs

    def step(self, tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append each sequence's new ``tokens``; fp32 logits [num_seqs, vocab] of their last."""
        chunks = [self._chunk(index, len(new)) for index, new in enumerate(tokens)]
        ids = torch.tensor([t for new in tokens for t in new], device=self.device)
        positions = torch.tensor([p for c in chunks for p in c.positions], device=self.device)
        with torch.inference_mode():
            batch = build_attention_batch(chunks, self.kv_cache, kv_scales=self.kv_scales)
            with step_context(batch):
                logits: torch.Tensor = self.model(ids, positions, batch.logits_indices)
        return logits.float()

    def _chunk(self, index: int, num_new: int) -> _Chunk:
        start = self.lengths[index]
        self.lengths[index] += num_new
        first = index * self.blocks_per_seq
        table = tuple(range(first, first + self.blocks_per_seq))
        positions = tuple(range(start, start + num_new))
        size = self.block_size
        slots = tuple(table[p // size] * size + p % size for p in positions)
        return _Chunk(f"seq-{index}", positions, slots, table)


@dataclass(frozen=True, slots=True)
class Accuracy:
    """A candidate model against its reference over greedy continuations of fixed prompts."""

    mean_kl: float
    """Mean KL(reference || candidate) of the next-token distributions, nats."""
    greedy_agreement: float
    """Fraction of positions where both pick the same token, on the reference's context."""
    identical_sequences: int
    """Prompts whose free-running greedy continuation is identical token for token."""
    num_prompts: int
    num_tokens: int
    """Tokens generated per prompt."""


def compare_greedy(
    reference: nn.Module,
    candidate: nn.Module,
    arch: ModelArchConfig,
    prompts: Sequence[Sequence[int]],
    num_tokens: int = 128,
    kv_cache_dtype: str = "auto",
) -> Accuracy:
    """KL and agreement with teacher forcing, then free-running greedy sequences compared.

    ``kv_cache_dtype`` is the candidate's KV cache (``int8`` measures the int8 cache).
    """
    max_len = max(len(p) for p in prompts) + num_tokens
    ref = GreedyDecoder(reference, arch, len(prompts), max_len)
    cand = GreedyDecoder(candidate, arch, len(prompts), max_len, kv_cache_dtype)
    ref_logits, cand_logits = ref.step(prompts), cand.step(prompts)
    kl_sum, matches = 0.0, 0
    forced: list[list[int]] = [[] for _ in prompts]
    for step in range(num_tokens):
        kl_sum += float(next_token_kl(ref_logits, cand_logits).sum())
        matches += int(greedy_matches(ref_logits, cand_logits).sum())
        next_ids = ref_logits.argmax(dim=-1).tolist()
        for sequence, token_id in zip(forced, next_ids, strict=True):
            sequence.append(token_id)
        if step + 1 < num_tokens:
            ref_logits = ref.step([[t] for t in next_ids])
            cand_logits = cand.step([[t] for t in next_ids])
    free = greedy_generate(candidate, arch, prompts, num_tokens, kv_cache_dtype)
    count = len(prompts) * num_tokens
    return Accuracy(
        mean_kl=kl_sum / count,
        greedy_agreement=matches / count,
        identical_sequences=sum(a == b for a, b in zip(forced, free, strict=True)),
        num_prompts=len(prompts),
        num_tokens=num_tokens,
    )


def greedy_generate(
    model: nn.Module,
    arch: ModelArchConfig,
    prompts: Sequence[Sequence[int]],
    num_tokens: int,
    kv_cache_dtype: str = "auto",
) -> list[list[int]]:
    """Each prompt's ``num_tokens`` greedy tokens (no stop tokens), all decoded together."""
    max_len = max(map(len, prompts)) + num_tokens
    decoder = GreedyDecoder(model, arch, len(prompts), max_len, kv_cache_dtype)
    next_ids: list[int] = decoder.step(prompts).argmax(dim=-1).tolist()
    outputs = [[t] for t in next_ids]
    for _ in range(num_tokens - 1):
        next_ids = decoder.step([[t] for t in next_ids]).argmax(dim=-1).tolist()
        for output, token_id in zip(outputs, next_ids, strict=True):
            output.append(token_id)
    return outputs


def decode_tokens_per_s(
    models: Sequence[nn.Module],
    arch: ModelArchConfig,
    batch_size: int,
    steps: int = 32,
    rounds: int = 5,
) -> list[float]:
    """Decode throughput of each model at ``batch_size``: median of interleaved rounds."""
    prompt = [
        [3 + (i * 7 + j) % (arch.vocab_size - 3) for j in range(32)] for i in range(batch_size)
    ]
    rates: list[list[float]] = [[] for _ in models]
    for round_index in range(rounds + 1):  # round 0 warms up
        for model, model_rates in zip(models, rates, strict=True):
            decoder = GreedyDecoder(model, arch, batch_size, len(prompt[0]) + steps)
            tokens = decoder.step(prompt).argmax(dim=-1).tolist()
            started = time.perf_counter()
            for _ in range(steps):
                tokens = decoder.step([[t] for t in tokens]).argmax(dim=-1).tolist()
            if round_index:
                model_rates.append(batch_size * steps / (time.perf_counter() - started))
    return [statistics.median(r) for r in rates]
