"""Running a job's rows through an LLM in this process: the server's ServedLLM and its engine.

Each row is one prompt (a text column, input ``prompt``) or one conversation (a column of chat
messages, input ``messages``, rendered with the model's chat template). The outputs are the
generated ``text``, the ``finish_reason`` (``stop`` or ``length``) and ``completion_tokens``.
The engine batches continuously by itself, so the job's batch size is simply how many rows it
keeps generating at once: the engine's ``max_num_seqs``, unless given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np
import orjson

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import InvalidRequest
from inferd.jobs.runner import Tensors
from inferd.llm.sampling_params import SamplingParams
from inferd.metrics.registry import ServerMetrics
from inferd.replicas.served_llm import ServedLLM

OUTPUTS = (
    TensorSpec("text", "BYTES", (-1,)),
    TensorSpec("finish_reason", "BYTES", (-1,)),
    TensorSpec("completion_tokens", "INT64", (-1,)),
)


class LLMRunner:
    """An LLM that answers one prompt (or conversation) per row."""

    def __init__(self, model: ServedLLM, params: SamplingParams, chat: bool) -> None:
        self._model = model
        self._params = params
        self._input = TensorSpec("messages" if chat else "prompt", "BYTES", (-1,))

    @classmethod
    async def start(cls, config: ModelConfig, params: SamplingParams, chat: bool) -> LLMRunner:
        """Load the tokenizer and weights and start the engine; ``ConfigError`` if it cannot."""
        model = ServedLLM(config.name, config, ServerMetrics().llm(config.name))
        await model.load()
        return cls(model, params, chat)

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self._input,)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return OUTPUTS

    @property
    def replicas(self) -> int:
        return 1

    @property
    def preferred_batch_size(self) -> int:
        return self._model.config.llm.max_num_seqs

    @property
    def max_batch_bytes(self) -> int:
        return 1 << 40

    @property
    def fixed_batch_size(self) -> int | None:
        return self._model.config.llm.max_num_seqs

    def reject(self, tensors: Tensors) -> dict[int, str]:
        """Rows whose prompt is empty, is not valid chat, or does not fit the context."""
        bad = {}
        for i, raw in enumerate(tensors[self._input.name]):
            try:
                self._prompt(raw)
            except InvalidRequest as e:
                bad[i] = e.message
        return bad

    def _prompt(self, raw: bytes) -> tuple[list[int], SamplingParams]:
        """The row's prompt tokens and its sampling parameters (max_tokens fitted)."""
        tokenizer = self._model.tokenizer
        assert tokenizer is not None
        if self._input.name == "messages":
            try:
                messages = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest("messages: not a list of chat messages") from None
            if not isinstance(messages, list):
                raise InvalidRequest("messages: not a list of chat messages")
            ids = tokenizer.encode_chat(messages)
        else:
            ids = tokenizer.encode(raw.decode(errors="replace")) if raw else []
        max_tokens = self._model.check_prompt(ids, self._params.max_tokens)
        return ids, dataclasses.replace(self._params, max_tokens=max_tokens)

    async def infer(self, tensors: Tensors, batch_size: int) -> Tensors:
        """Generate for every row, ``batch_size`` rows at a time; an empty row stays empty."""
        slots = asyncio.Semaphore(batch_size)
        rows = tensors[self._input.name]
        answers = await asyncio.gather(*(self._answer(raw, slots) for raw in rows))
        return {
            "text": _objects([a[0].encode() for a in answers]),
            "finish_reason": _objects([a[1].encode() for a in answers]),
            "completion_tokens": np.array([a[2] for a in answers], dtype=np.int64),
        }

    async def _answer(self, raw: bytes, slots: asyncio.Semaphore) -> tuple[str, str, int]:
        if not raw:
            return "", "", 0  # a row rejected before computing: its output is dropped
        ids, params = self._prompt(raw)
        text: list[str] = []
        tokens, finish = 0, ""
        async with slots:
            async for delta in self._model.generate(ids, params, time.perf_counter()):
                text.append(delta.text)
                tokens += len(delta.token_ids)
                finish = delta.finish_reason or finish
        return "".join(text), finish, tokens

    def cost(self, price_per_hour: float, seconds: float) -> float:
        """Price times the job's hours (one engine)."""
        return price_per_hour * seconds / 3600.0

    async def close(self) -> None:
        await self._model.close()


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
