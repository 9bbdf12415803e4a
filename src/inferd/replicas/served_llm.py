"""One LLM as the server sees it: its engine, its tokenizer, its metrics and its state.

The engine runs in a thread of the server's process (``AsyncLLMEngine``), which loads it too:
its matrix work runs in torch's own threads without the GIL, and the event loop only moves
tokens. Torch is imported when the model loads, so a slim install without it serves its tensor
models and reports the LLM as unavailable with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from inferd.config import ModelConfig, usable_cpus
from inferd.errors import ConfigError, InvalidRequest, ModelNotReady, Overloaded
from inferd.metrics.llm_metrics import LLMMetrics
from inferd.replicas.served_model import ModelState

if TYPE_CHECKING:
    from inferd.llm.async_engine import AsyncLLMEngine
    from inferd.llm.engine import EngineConfig
    from inferd.llm.output import TextDelta
    from inferd.llm.sampling import SamplingParams
    from inferd.llm.tokenizer import Tokenizer

logger = logging.getLogger("inferd.models")


async def aclose(stream: AsyncIterator[Any]) -> None:
    """Close an async generator (typed as an iterator) so that its ``finally`` runs now."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


_MIB = 1 << 20


class ServedLLM:
    """An LLM served through the OpenAI API."""

    def __init__(self, name: str, config: ModelConfig, metrics: LLMMetrics) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.engine: AsyncLLMEngine | None = None
        self.tokenizer: Tokenizer | None = None
        self.max_model_len = 0
        self.created = int(time.time())
        self._ids = itertools.count()
        self.active = 0
        """Sequences admitted and not finished: the engine's running and waiting ones."""
        self.capacity = config.llm.max_num_seqs + config.llm.max_waiting
        self._engine_config: EngineConfig | None = None
        self._threads = 0

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def not_ready_reason(self) -> str:
        if self.state is ModelState.LOADING:
            return f"model {self.name!r} is still loading"
        return f"model {self.name!r} is not available: {self.error}"

    async def load(self) -> None:
        """Load the tokenizer and the weights, size the KV cache, start the engine thread."""
        engine, self.tokenizer = await asyncio.to_thread(self._build)
        self.engine = engine
        core = engine.engine
        self.max_model_len = min(core.scheduler.config.max_seq_len, core.arch.max_model_len)
        runner, settings = core.runner, self._engine_config
        assert settings is not None
        logger.info(
            "LLM %r loaded: %s, dtype=%s quantization=%s kv_cache_dtype=%s compile=%s, %d KV "
            "blocks of %d tokens (%.0f MiB), %d compute threads",
            self.name,
            core.arch.architecture,
            str(runner.dtype).removeprefix("torch."),
            settings.quantization,
            settings.kv_cache_dtype,
            str(settings.compile).lower(),
            runner.num_blocks,
            runner.block_size,
            runner.kv_cache_bytes / _MIB,
            self._threads,
        )
        self.metrics.engine_snapshot = self._snapshot
        self.metrics.set_replicas(1)
        self.state = ModelState.READY

    def _build(self) -> tuple[AsyncLLMEngine, Tokenizer]:
        try:
            from inferd.llm.async_engine import AsyncLLMEngine
            from inferd.llm.device import default_device, set_compute_threads
            from inferd.llm.engine import EngineConfig
            from inferd.llm.tokenizer import Tokenizer
        except ImportError as e:
            raise ConfigError(
                f"model {self.name!r} is an LLM, which needs PyTorch: install inferd[torch] ({e})"
            ) from e
        settings, path = self.config.llm, self.config.path
        if not (path / "tokenizer.json").is_file():
            raise ConfigError(f"model {self.name!r}: {path} has no tokenizer.json")
        tokenizer = Tokenizer.from_folder(path)
        self._threads = self.config.threads or usable_cpus()
        set_compute_threads(self._threads)
        device = self.config.device
        if device == "auto":
            device = default_device()
        dtype, quantization = _precision(self.config)
        engine_config = EngineConfig(
            model_path=str(path),
            dtype=dtype,
            device=device,
            block_size=settings.block_size,
            kv_cache_bytes=settings.kv_cache_mb * _MIB,
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            enable_prefix_caching=settings.enable_prefix_caching,
            quantization=quantization,
            kv_cache_dtype=settings.kv_cache_dtype,
            pack_weights=settings.pack_weights,
            compile=settings.compile,
        )
        self._engine_config = engine_config
        return AsyncLLMEngine.from_config(engine_config), tokenizer

    async def close(self) -> None:
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
            self.metrics.set_replicas(0)
        self.state = ModelState.UNAVAILABLE if self.state is not ModelState.READY else self.state

    def _snapshot(self) -> dict[str, float]:
        assert self.engine is not None
        stats = self.engine.stats
        return {
            "num_running": stats.num_running,
            "num_waiting": stats.num_waiting,
            "kv_cache_usage": stats.kv_cache_usage,
            "kv_token_usage": stats.kv_token_usage,
            "num_preemptions": stats.num_preemptions,
            "prefix_cache_queries": stats.prefix_cache_queries,
            "prefix_cache_hits": stats.prefix_cache_hits,
        }

    # --- requests -------------------------------------------------------------------------

    def _ready_parts(self) -> tuple[AsyncLLMEngine, Tokenizer]:
        if self.engine is None or self.tokenizer is None or not self.ready:
            raise ModelNotReady(self.not_ready_reason())
        return self.engine, self.tokenizer

    def ready_tokenizer(self) -> Tokenizer:
        """The tokenizer; 503 ``ModelNotReady`` while the model is not serving."""
        return self._ready_parts()[1]

    def admit(self, num_sequences: int) -> None:
        """503 with Retry-After, at once, when the sequences would overflow the waiting room."""
        if self.active + num_sequences > self.capacity:
            raise Overloaded(
                f"model {self.name!r} is at capacity: {self.active} sequences running or "
                f"waiting (max_num_seqs + max_waiting = {self.capacity}); retry later"
            )

    def check_prompt(self, prompt_token_ids: Sequence[int], max_tokens: int | None) -> int:
        """The max_tokens to use; 400 if the prompt (plus max_tokens) exceeds the context."""
        n = len(prompt_token_ids)
        if n == 0:
            raise InvalidRequest("the prompt is empty")
        if n >= self.max_model_len:
            raise InvalidRequest(
                f"this model's maximum context length is {self.max_model_len} tokens, "
                f"but the prompt has {n} tokens"
            )
        if max_tokens is None:
            return self.max_model_len - n
        if n + max_tokens > self.max_model_len:
            raise InvalidRequest(
                f"this model's maximum context length is {self.max_model_len} tokens, but "
                f"{n} prompt tokens + max_tokens = {max_tokens} ask for {n + max_tokens}; "
                f"reduce the prompt or max_tokens"
            )
        return max_tokens

    async def generate(
        self, prompt_token_ids: Sequence[int], params: SamplingParams, arrival: float
    ) -> AsyncIterator[TextDelta]:
        """One sequence's text deltas; closing the iterator early aborts it in the engine."""
        from inferd.llm.output import OutputProcessor

        engine, tokenizer = self._ready_parts()
        processor = OutputProcessor(tokenizer, prompt_token_ids, params)
        request_id = f"{self.name}-{next(self._ids)}"
        self.metrics.count_prompt(len(prompt_token_ids))
        last = None
        stream = engine.stream(request_id, prompt_token_ids, params)
        self.active += 1
        try:
            async for output in stream:
                now = time.perf_counter()
                if last is None:
                    self.metrics.observe_first_token(now - arrival)
                else:
                    self.metrics.observe_token(now - last)
                last = now
                delta = processor.push(output)
                yield delta
                if delta.finished:
                    return
        finally:
            self.active -= 1
            await aclose(stream)  # a stop string or a gone client: the engine drops it

    def describe(self) -> dict[str, Any]:
        """The model's entry in /v1/models."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "inferd",
            "max_model_len": self.max_model_len,
        }


_PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _precision(config: ModelConfig) -> tuple[str, str]:
    """``(dtype, quantization)``: ``[llm]`` as set, or what the model's ``precision`` implies."""
    dtype, quantization = config.llm.dtype, config.llm.quantization
    if config.precision == "int8" and quantization == "none":
        quantization = "int8"
    elif config.precision in _PRECISION_DTYPES and dtype == "auto":
        dtype = _PRECISION_DTYPES[config.precision]
    return dtype, quantization
