"""LLMEngine: requests in, tokens out, one ``step()`` at a time (no asyncio, no threads).

A step is vLLM's ``EngineCore.step``: the scheduler plans which tokens to compute, the runner
computes them, the sampler picks the next token of each sequence that reached its end, and the
scheduler records it all. ``async_engine.AsyncLLMEngine`` runs this loop in a thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, replace
from typing import Final

import torch

from inferd.errors import ConfigError, InvalidRequest
from inferd.llm.checkpoint import ModelArchConfig
from inferd.llm.models import resolve_dtype
from inferd.llm.quant import QUANTIZATIONS
from inferd.llm.runner import ModelRunner
from inferd.llm.sampling import Sampler, SamplerOutput, SamplingParams
from inferd.llm.scheduler import RunnerOutput, Scheduler, SchedulerConfig, StepOutput
from inferd.llm.sequence import Sequence

GREEDY: Final = SamplingParams(temperature=0.0)
"""Argmax decoding: the default of offline ``generate``."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What model to serve, where, and how the engine spends memory and compute."""

    model_path: str = ""
    """Hugging Face checkpoint folder (config.json + safetensors)."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto: the checkpoint's own dtype."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:1."""
    block_size: int = 16
    """Tokens per KV block."""
    kv_cache_bytes: int = 1 << 30
    """Memory for the KV cache; the number of blocks is this over the bytes of one block."""
    max_num_seqs: int = 256
    """Most sequences running at once."""
    max_num_batched_tokens: int = 2048
    """Token budget of one step."""
    enable_prefix_caching: bool = True
    """Share the KV of full blocks between requests with the same prefix."""
    quantization: str = "none"
    """none; int8: int8 weights, one scale per output channel (``llm/quant.py``); w8a8: int8
    weights, and int8 activations in large steps. An int8 checkpoint loads as int8 anyway."""
    kv_cache_dtype: str = "auto"
    """auto: the model's dtype; int8: K and V in int8 with a scale per token and head (about
    3.8x the tokens in the same ``kv_cache_bytes`` for 128-wide heads, decodes gather)."""
    pack_weights: bool = True
    """On CPU, reorder fp32/bf16 linear weights once into oneDNN's layout (``llm/packed.py``;
    fp32 keeps its plain weights too, for steps of few rows); off: ``F.linear`` on the weights
    as loaded, one copy."""
    compile: bool = False
    """Compile the model with ``torch.compile`` (``ModelRunner.compile``) at load, instead of
    packing its weights: faster steps, at the price of tens of seconds at start."""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field and its value."""
        if not self.model_path:
            raise ConfigError("engine: model_path is empty: expected a checkpoint folder")
        if self.dtype != "auto":
            resolve_dtype(self.dtype, "engine")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"engine: quantization = {self.quantization!r}: expected one of "
                + ", ".join(QUANTIZATIONS)
            )
        if self.kv_cache_dtype not in ("auto", "int8"):
            raise ConfigError(
                f"engine: kv_cache_dtype = {self.kv_cache_dtype!r}: expected auto or int8"
            )
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"engine: device = {self.device!r}: {exc}") from exc
        if self.compile and self.quantization != "none":
            raise ConfigError(
                f"engine: compile = true with quantization = {self.quantization!r}: "
                "compilation covers unquantized models only"
            )
        for name in ("block_size", "kv_cache_bytes", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"engine: {name} = {value!r}: expected an integer >= 1")


@dataclass(slots=True)
class EngineRequest:
    """A request the engine holds: its parameters and the scheduler's sequence."""

    request_id: str
    params: SamplingParams
    seq: Sequence


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's gauges and counters, safe to hand to another thread."""

    num_running: int = 0
    num_waiting: int = 0
    num_preemptions: int = 0
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the prefix cache."""
    prefix_cache_hits: int = 0
    """Of those, tokens whose KV the cache supplied."""
    num_blocks: int = 0
    block_size: int = 16
    num_used_blocks: int = 0
    num_tokens_stored: int = 0
    """Computed tokens held in used blocks (a shared block counted once)."""
    num_prompt_tokens: int = 0
    """Tokens in: every added request's prompt."""
    num_generation_tokens: int = 0
    """Tokens out: every sampled token."""
    num_steps: int = 0
    num_computed_tokens: int = 0
    """Tokens the model computed, recomputation after preemption included."""

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of blocks in use."""
        return self.num_used_blocks / self.num_blocks if self.num_blocks else 0.0

    @property
    def kv_token_usage(self) -> float:
        """Fraction of the cache's token slots holding real tokens."""
        slots = self.num_blocks * self.block_size
        return self.num_tokens_stored / slots if slots else 0.0


class LLMEngine:
    """Continuous batching over a paged KV cache: ``add_request``, then ``step()`` until done."""

    def __init__(
        self, runner: ModelRunner, scheduler: Scheduler, sampler: Sampler | None = None
    ) -> None:
        if scheduler.config.block_size != runner.block_size:
            raise ConfigError(
                f"engine: scheduler block_size = {scheduler.config.block_size} but the runner's "
                f"KV cache has block_size = {runner.block_size}"
            )
        self.runner = runner
        self.scheduler = scheduler
        self.sampler = sampler or Sampler(runner.arch.eos_token_ids)
        self.num_steps = 0
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0
        self.num_computed_tokens = 0
        self._requests: dict[str, EngineRequest] = {}
        self._generate_ids = itertools.count()

    @classmethod
    def from_config(cls, config: EngineConfig, sampler: Sampler | None = None) -> LLMEngine:
        """Load the checkpoint, size the KV cache and build the scheduler."""
        config.validate()
        dtype = None if config.dtype == "auto" else config.dtype
        runner = ModelRunner.from_checkpoint(
            config.model_path,
            dtype,
            config.device,
            config.block_size,
            config.kv_cache_bytes,
            config.quantization,
            config.kv_cache_dtype,
        )
        if config.pack_weights and not config.compile:  # Inductor packs frozen weights itself
            runner.pack_weights()  # int8 layers are not nn.Linear: they stay as they are
        scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                block_size=config.block_size,
                num_blocks=runner.num_blocks,
                enable_prefix_caching=config.enable_prefix_caching,
            )
        )
        engine = cls(runner, scheduler, sampler)
        if config.compile:
            try:
                runner.compile()
                engine.warm_up()
            except Exception as exc:  # Inductor's and the C++ build's errors are long
                first_line = next(iter(str(exc).strip().splitlines()), "")
                raise ConfigError(
                    f"engine: compile = true, but compiling the model failed: "
                    f"{type(exc).__name__}: {first_line}"
                ) from exc
        return engine

    @property
    def arch(self) -> ModelArchConfig:
        return self.runner.arch

    # --- requests ---------------------------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: SequenceOf[int], params: SamplingParams
    ) -> None:
        """Queue one sequence (``params.n`` is the caller's business); ``InvalidRequest`` if it
        can never be served as asked. Stop strings are the caller's too: it sees the text."""
        self._check_request(prompt_token_ids, params)
        eos_ids = self.arch.eos_token_ids
        stop = params.to_stop_condition(eos_ids[0] if eos_ids else None, eos_ids[1:])
        seq = Sequence(request_id, tuple(prompt_token_ids), stop)
        self.scheduler.add(seq)
        self._requests[request_id] = EngineRequest(request_id, params, seq)
        self.num_prompt_tokens += seq.num_prompt_tokens

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its blocks; False if it is unknown or already finished."""
        self._requests.pop(request_id, None)
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- the loop ---------------------------------------------------------------------------

    def step(self) -> list[StepOutput]:
        """One iteration: schedule → run the model → sample → update; the new tokens."""
        plan = self.scheduler.schedule()
        if plan.is_empty:
            return []
        logits, request_ids = self.runner.execute(plan)
        sample = SamplerOutput([])
        if request_ids:
            requests = [self._requests[rid] for rid in request_ids]
            sample = self.sampler.sample(
                logits, [r.params for r in requests], [r.seq for r in requests]
            )
        sampled = RunnerOutput(dict(zip(request_ids, sample.token_ids, strict=True)))
        outputs = self.scheduler.update(plan, sampled)
        if sample.logprobs is not None:
            outputs = _with_logprobs(outputs, request_ids, sample, self._requests)
        self.num_steps += 1
        self.num_computed_tokens += plan.num_scheduled_tokens
        self.num_generation_tokens += len(outputs)
        for output in outputs:
            if output.finished:
                del self._requests[output.request_id]
        return outputs

    def generate(
        self,
        prompts: Iterable[SequenceOf[int]],
        params: SamplingParams | SequenceOf[SamplingParams] = GREEDY,
    ) -> list[list[int]]:
        """Offline: run every prompt to completion together; the output tokens of each."""
        prompts = list(prompts)
        all_params = [params] * len(prompts) if isinstance(params, SamplingParams) else params
        request_ids = [f"generate-{next(self._generate_ids)}" for _ in prompts]
        for request_id, prompt, request_params in zip(
            request_ids, prompts, all_params, strict=True
        ):
            self.add_request(request_id, prompt, request_params)
        tokens: dict[str, list[int]] = {request_id: [] for request_id in request_ids}
        while any(self.scheduler.get(request_id) for request_id in request_ids):
            num_steps = self.num_steps
            for output in self.step():
                if output.request_id in tokens:
                    tokens[output.request_id].append(output.token_id)
            if self.num_steps == num_steps:
                raise RuntimeError("the scheduler planned nothing while requests are waiting")
        return [tokens[request_id] for request_id in request_ids]

    def warm_up(self) -> None:
        """Run two tiny requests through prefill and decode so that a compiled model compiles
        now, not on the first client's request; the counters forget them."""
        self.generate([[1, 2], [3]], SamplingParams(max_tokens=2, ignore_eos=True, temperature=0))
        self.num_steps = self.num_prompt_tokens = 0
        self.num_generation_tokens = self.num_computed_tokens = 0
        self.scheduler.kv_cache.prefix_cache_queries = 0
        self.scheduler.kv_cache.prefix_cache_hits = 0

    # --- metrics ----------------------------------------------------------------------------

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions

    def stats(self) -> EngineStats:
        """The gauges and counters now; call it from the thread that steps the engine."""
        kv_cache = self.scheduler.kv_cache
        return EngineStats(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            num_preemptions=self.scheduler.num_preemptions,
            prefix_cache_queries=kv_cache.prefix_cache_queries,
            prefix_cache_hits=kv_cache.prefix_cache_hits,
            num_blocks=kv_cache.num_blocks,
            block_size=kv_cache.block_size,
            num_used_blocks=kv_cache.pool.num_used_blocks,
            num_tokens_stored=kv_cache.num_tokens_stored,
            num_prompt_tokens=self.num_prompt_tokens,
            num_generation_tokens=self.num_generation_tokens,
            num_steps=self.num_steps,
            num_computed_tokens=self.num_computed_tokens,
        )

    # --- helpers ----------------------------------------------------------------------------

    def _check_request(self, prompt_token_ids: SequenceOf[int], params: SamplingParams) -> None:
        max_len = self.arch.max_model_len
        if len(prompt_token_ids) + params.max_tokens > max_len:
            raise InvalidRequest(
                f"{len(prompt_token_ids)} prompt tokens + max_tokens = {params.max_tokens} "
                f"exceed the model's context of {max_len} tokens"
            )
        vocab_size = self.arch.vocab_size
        if any(not 0 <= token_id < vocab_size for token_id in prompt_token_ids):
            raise InvalidRequest(f"prompt has token ids outside [0, {vocab_size})")


def _with_logprobs(
    outputs: list[StepOutput],
    request_ids: SequenceOf[str],
    sample: SamplerOutput,
    requests: dict[str, EngineRequest],
) -> list[StepOutput]:
    """Attach each sampled token's logprob (and top alternatives) where its request asked."""
    assert sample.logprobs is not None
    row = {rid: i for i, rid in enumerate(request_ids)}
    result: list[StepOutput] = []
    for out in outputs:
        request = requests.get(out.request_id)
        i = row[out.request_id]
        if request is not None and request.params.logprobs:
            top = sample.top_logprobs[i] if sample.top_logprobs is not None else None
            out = replace(out, logprob=sample.logprobs[i], top_logprobs=top)
        result.append(out)
    return result
