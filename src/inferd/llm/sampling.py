"""Sampling parameters (validated at the edge) and the batched sampler: logits to tokens.

The sampler processes a ``[N, V]`` batch of logits row-wise, vectorised over the batch:

1. ``min_tokens``: stop and eos tokens are masked out while a row is too short to stop.
2. Penalties: repetition (prompt and output tokens, the Hugging Face formula), then frequency
   and presence (output tokens only, the OpenAI formula).
3. Temperature: divide by it; greedy rows (temperature 0) are left as they are.
4. Truncation: min-p, then top-k and top-p from one descending sort.
5. Draw: greedy rows take the argmax; the others race exponential noise (``argmax(p / q)``
   with ``q ~ Exp(1)`` samples ``p`` exactly and needs no ``multinomial`` sync).

Logprobs are ``log_softmax`` of the logits after steps 1-3 (penalties and temperature, as
OpenAI reports them) and before truncation, so alternatives outside top-k/top-p stay finite.

A seeded row draws its noise from a generator reseeded from ``(seed, number of output tokens)``
at every step: its tokens depend on nothing else in the batch, and survive preemption.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from inferd.llm.sampling_params import (
    GREEDY_BELOW,
    MAX_N,
    MAX_STOP_STRINGS,
    MAX_TOP_LOGPROBS,
    SamplingParams,
)

__all__ = [
    "GREEDY_BELOW",
    "MAX_N",
    "MAX_STOP_STRINGS",
    "MAX_TOP_LOGPROBS",
    "Sampler",
    "SamplerOutput",
    "SamplingParams",
]

_UINT64 = (1 << 64) - 1


class SequenceTokens(Protocol):
    """A row's token history; ``inferd.llm.sequence.Sequence`` is one."""

    @property
    def prompt_token_ids(self) -> Sequence[int]: ...

    @property
    def output_token_ids(self) -> Sequence[int]: ...


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    """One token per row; logprobs only when some row asked for them."""

    token_ids: list[int]
    logprobs: list[float] | None = None
    """The chosen token's logprob, per row (every row when any row asked)."""
    top_logprobs: list[list[tuple[int, float]]] | None = None
    """Per row, its ``top_logprobs`` most likely ``(token_id, logprob)``, best first."""


class Sampler:
    """Turns a batch of logits into next tokens, one row per sequence (see the module doc)."""

    def __init__(
        self, eos_token_ids: Collection[int] = (), generator: torch.Generator | None = None
    ) -> None:
        self.eos_token_ids = frozenset(eos_token_ids)
        """Masked with the stop token ids until ``min_tokens`` (unless ``ignore_eos``)."""
        self.generator = generator
        """Noise for unseeded rows, on the logits' device; None uses torch's global generator."""
        self._seeded: dict[torch.device, torch.Generator] = {}

    def sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        histories: Sequence[SequenceTokens],
    ) -> SamplerOutput:
        """Sample row ``i`` of fp32 ``logits [N, V]`` with ``params[i]`` given ``histories[i]``."""
        if not logits.shape[0] == len(params) == len(histories):
            raise ValueError(
                f"{logits.shape[0]} logit rows, {len(params)} params, {len(histories)}"
            )
        logits = logits.to(torch.float32, copy=True)
        self._mask_early_stops(logits, params, histories)
        logits = apply_penalties(logits, params, histories)
        _apply_temperature(logits, params)
        logprobs = torch.log_softmax(logits, dim=-1) if any(p.logprobs for p in params) else None
        token_ids = _argmax(logits)
        if not all(p.is_greedy for p in params):
            sampled = self._draw(_truncate(logits, params), params, histories)
            greedy = torch.tensor([p.is_greedy for p in params], device=logits.device)
            token_ids = torch.where(greedy, token_ids, sampled)
        if logprobs is None:
            return SamplerOutput(token_ids.tolist())
        return _with_logprobs(token_ids, logprobs, params)

    def _mask_early_stops(
        self, logits: torch.Tensor, params: Sequence[SamplingParams], hist: Sequence[SequenceTokens]
    ) -> None:
        rows: list[int] = []
        cols: list[int] = []
        for i, (p, h) in enumerate(zip(params, hist, strict=True)):
            if len(h.output_token_ids) >= p.min_tokens:
                continue
            stops = p.stop_token_ids if p.ignore_eos else p.stop_token_ids | self.eos_token_ids
            ids = [t for t in stops if t < logits.shape[1]]
            rows += [i] * len(ids)
            cols += ids
        if rows:
            index = torch.tensor([rows, cols], device=logits.device)
            logits[index[0], index[1]] = -math.inf

    def _draw(
        self, logits: torch.Tensor, params: Sequence[SamplingParams], hist: Sequence[SequenceTokens]
    ) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        if any(p.seed is None for p in params):
            noise.exponential_(generator=self.generator)
        for i, (p, h) in enumerate(zip(params, hist, strict=True)):
            if p.seed is not None:
                gen = self._seeded_generator(logits.device)
                gen.manual_seed(_step_seed(p.seed, len(h.output_token_ids)))
                noise[i].exponential_(generator=gen)
        # Exp(1) noise can be exactly 0; the floor keeps p / q finite (p <= 1 cannot overflow).
        noise.clamp_min_(torch.finfo(noise.dtype).tiny)
        return _argmax(probs.div_(noise))

    def _seeded_generator(self, device: torch.device) -> torch.Generator:
        # One per device is enough: it is reseeded before every row that uses it.
        if device not in self._seeded:
            self._seeded[device] = torch.Generator(device=device)
        return self._seeded[device]


def _step_seed(seed: int, step: int) -> int:
    """Mix ``(seed, step)`` into a 64-bit generator seed (splitmix64's finaliser)."""
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _UINT64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _UINT64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _UINT64
    return z ^ (z >> 31)


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)


def _token_counts(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """``[N, V]`` float counts of each token id per row, by one scatter over padded ids."""
    width = max(1, max((len(r) for r in rows), default=0))
    # Pad (and clamp out-of-range ids) to column V, an extra column that is dropped.
    padded = [r + [vocab_size] * (width - len(r)) for r in rows]
    ids = torch.tensor(padded, dtype=torch.long, device=device).clamp_(0, vocab_size)
    counts = torch.zeros(len(rows), vocab_size + 1, device=device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
    return counts[:, :vocab_size]


def apply_penalties(
    logits: torch.Tensor, params: Sequence[SamplingParams], hist: Sequence[SequenceTokens]
) -> torch.Tensor:
    """Repetition (prompt + output tokens), then frequency and presence (output) penalties."""
    vocab_size, device = logits.shape[1], logits.device
    if any(p.repetition_penalty != 1.0 for p in params):
        rows = [
            [*h.prompt_token_ids, *h.output_token_ids] if p.repetition_penalty != 1.0 else []
            for p, h in zip(params, hist, strict=True)
        ]
        seen = _token_counts(rows, vocab_size, device) > 0
        penalty = _column([p.repetition_penalty for p in params], logits)
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalised, logits)
    if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params):
        counts = _token_counts([list(h.output_token_ids) for h in hist], vocab_size, device)
        frequency = _column([p.frequency_penalty for p in params], logits)
        presence = _column([p.presence_penalty for p in params], logits)
        logits = logits - (frequency * counts + presence * (counts > 0))
    return logits


def _apply_temperature(logits: torch.Tensor, params: Sequence[SamplingParams]) -> None:
    temperatures = [1.0 if p.is_greedy else p.temperature for p in params]
    if any(t != 1.0 for t in temperatures):
        logits.div_(_column(temperatures, logits))


def _truncate(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Mask (to -inf) the tokens outside each row's min-p, top-k and top-p sets."""
    logits = logits.clone()
    if any(p.min_p > 0 for p in params):
        # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p); log(0) = -inf keeps all.
        log_min_p = _column(
            [math.log(p.min_p) if p.min_p > 0 else -math.inf for p in params], logits
        )
        floor = logits.amax(dim=-1, keepdim=True) + log_min_p
        logits.masked_fill_(logits < floor, -math.inf)
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        logits = _top_k_top_p(logits, params)
    return logits


def _top_k_top_p(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    vocab_size = logits.shape[1]
    ordered, order = logits.sort(dim=-1, descending=True)
    ks = torch.tensor(
        [p.top_k if p.top_k > 0 else vocab_size for p in params], device=logits.device
    )
    ranks = torch.arange(vocab_size, device=logits.device)
    ordered.masked_fill_(ranks >= ks.unsqueeze(1), -math.inf)
    if any(p.top_p < 1.0 for p in params):
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        # top_p = 1 must keep everything, even where rounding makes the cumsum exceed 1.
        top_p = _column([p.top_p if p.top_p < 1.0 else math.inf for p in params], logits)
        outside = before >= top_p
        outside[:, 0] = False
        ordered.masked_fill_(outside, -math.inf)
    return torch.empty_like(logits).scatter_(1, order, ordered)


def _with_logprobs(
    token_ids: torch.Tensor, logprobs: torch.Tensor, params: Sequence[SamplingParams]
) -> SamplerOutput:
    chosen = logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    k = min(max(p.top_logprobs for p in params), logprobs.shape[1])
    top: list[list[tuple[int, float]]] = [[] for _ in params]
    if k > 0:
        values, ids = logprobs.topk(k, dim=-1)
        for row, (p, row_ids, row_values) in enumerate(
            zip(params, ids.tolist(), values.tolist(), strict=True)
        ):
            top[row] = list(
                zip(row_ids[: p.top_logprobs], row_values[: p.top_logprobs], strict=True)
            )
    return SamplerOutput(token_ids.tolist(), chosen.tolist(), top)


def _argmax(x: torch.Tensor) -> torch.Tensor:
    """Each row's index of its largest value (the first, on ties; NaN counts as largest).

    On CPU through numpy: torch's CPU argmax over 32,000-wide rows took 1.35 ms for 32 rows,
    numpy's 0.17 ms, about 2% of a decode step of the benchmark model.
    """
    if x.device.type != "cpu":
        return x.argmax(dim=-1)
    return torch.from_numpy(x.numpy().argmax(axis=-1))
