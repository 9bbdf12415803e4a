"""AsyncLLMEngine: concurrent streams equal the sync engine, closing a stream aborts it.

The engine steps a tiny random Llama checkpoint in its background thread while the tests
consume streams on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_configs import LLAMA_SHAPE  # noqa: E402

from inferd.errors import (  # noqa: E402
    ConfigError,
    InvalidRequest,
    ModelError,
    ModelNotReady,
    ReplicaUnavailable,
)
from inferd.llm.async_engine import AsyncLLMEngine  # noqa: E402
from inferd.llm.engine import EngineConfig, LLMEngine  # noqa: E402
from inferd.llm.sampling import Sampler, SamplerOutput, SamplingParams  # noqa: E402
from inferd.llm.scheduler import StepOutput  # noqa: E402

NUM_PROMPTS = 8


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> EngineConfig:
    torch.manual_seed(0)
    shape = transformers.LlamaConfig(**LLAMA_SHAPE)
    path = tmp_path_factory.mktemp("llama")
    transformers.AutoModelForCausalLM.from_config(shape).save_pretrained(path)
    # 48 blocks of 4 tokens (2 layers, 2 KV heads of 16 dims, fp32): 8 streams preempt.
    return EngineConfig(
        model_path=str(path),
        dtype="float32",
        block_size=4,
        kv_cache_bytes=48 * 2048,
        max_num_seqs=8,
        max_num_batched_tokens=32,
    )


@pytest.fixture
def engine(config: EngineConfig) -> Iterator[AsyncLLMEngine]:
    engine = AsyncLLMEngine.from_config(config, idle_wait_s=0.05)
    yield engine
    engine.close()


def prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 256, (3 + 5 * i,), generator=generator).tolist() for i in range(8)]


def params(max_tokens: int = 12) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)


def sync_tokens(config: EngineConfig, max_tokens: int = 12) -> list[list[int]]:
    return LLMEngine.from_config(config).generate(prompts(), params(max_tokens))


async def collect(engine: AsyncLLMEngine, request_id: str, prompt: list[int]) -> list[StepOutput]:
    return [out async for out in engine.stream(request_id, prompt, params())]


async def wait_until_idle(engine: AsyncLLMEngine, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats.num_running + engine.stats.num_waiting or engine.stats.num_used_blocks:
        assert time.monotonic() < deadline, f"engine still busy: {engine.stats}"
        await asyncio.sleep(0.01)


async def test_concurrent_streams_match_the_sync_engine(
    engine: AsyncLLMEngine, config: EngineConfig
) -> None:
    streams = [collect(engine, f"r{i}", prompt) for i, prompt in enumerate(prompts())]
    results = await asyncio.gather(*streams)
    assert [[out.token_id for out in outs] for outs in results] == sync_tokens(config)
    for index, outs in enumerate(results):
        assert {out.request_id for out in outs} == {f"r{index}"}
        assert [out.finished for out in outs] == [False] * 11 + [True]
    await wait_until_idle(engine)
    assert engine.stats.num_generation_tokens == NUM_PROMPTS * 12
    assert engine.stats.num_preemptions > 0


async def test_closing_a_stream_aborts_only_its_request(
    engine: AsyncLLMEngine, config: EngineConfig
) -> None:
    async def read_two_then_close(request_id: str, prompt: list[int]) -> list[int]:
        stream = engine.stream(request_id, prompt, params(40))
        async with contextlib.aclosing(stream):
            return [(await anext(stream)).token_id for _ in range(2)]

    async def cancel_after_one(request_id: str, prompt: list[int]) -> None:
        received: list[StepOutput] = []

        async def consume() -> None:
            async for out in engine.stream(request_id, prompt, params(100)):
                received.append(out)

        task = asyncio.create_task(consume())
        while not received:
            await asyncio.sleep(0.001)
        task.cancel()  # what a server does to the handler of a client that went away
        with pytest.raises(asyncio.CancelledError):
            await task

    all_prompts = prompts()
    others = [collect(engine, f"r{i}", all_prompts[i]) for i in range(2, NUM_PROMPTS)]
    results = await asyncio.gather(
        read_two_then_close("r0", all_prompts[0]),
        cancel_after_one("r1", all_prompts[1]),
        *others,
    )
    expected = sync_tokens(config)
    assert results[0] == expected[0][:2]
    assert [[out.token_id for out in outs] for outs in results[2:]] == expected[2:]
    await wait_until_idle(engine)
    # Run to the end, r0 and r1 would have made 140 tokens; aborted, they stop within steps.
    assert engine.stats.num_generation_tokens < 6 * 12 + 40


async def test_abort_ends_the_stream(engine: AsyncLLMEngine) -> None:
    stream = engine.stream("r0", prompts()[0], params(100))
    first = await anext(stream)
    engine.abort("r0")
    rest = [out async for out in stream]
    assert not first.finished and len(rest) < 99
    await wait_until_idle(engine)


async def test_refused_request_raises_from_the_stream(engine: AsyncLLMEngine) -> None:
    with pytest.raises(InvalidRequest, match="context"):
        await anext(engine.stream("long", [5] * 250, params(40)))
    outs = await collect(engine, "ok", [5, 6, 7])
    assert len(outs) == 12  # the engine serves on after a refusal
    first = engine.stream("dup", [5], params(100))
    async with contextlib.aclosing(first):
        await anext(first)
        with pytest.raises(InvalidRequest, match="already in use"):
            await anext(engine.stream("dup", [6], params()))
        assert not (await anext(first)).finished  # the first request with the id goes on
    await wait_until_idle(engine)


async def test_failed_step_fails_its_streams_and_the_engine_serves_on(
    config: EngineConfig,
) -> None:
    class FailingOnce(Sampler):
        calls = 0

        def sample(self, *args: Any, **kwargs: Any) -> SamplerOutput:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            return super().sample(*args, **kwargs)

    engine = AsyncLLMEngine.from_config(config, sampler=FailingOnce())
    try:
        with pytest.raises(ModelError, match="boom"):
            await collect(engine, "r0", prompts()[0])
        assert len(await collect(engine, "r1", prompts()[1])) == 12
        await wait_until_idle(engine)
    finally:
        engine.close()


async def test_close_stops_the_thread_and_fails_open_streams(config: EngineConfig) -> None:
    engine = AsyncLLMEngine.from_config(config)
    stream = engine.stream("r0", prompts()[0], params(200))
    await anext(stream)
    engine.close()
    assert not engine.is_running
    with pytest.raises(ReplicaUnavailable):
        async for _ in stream:
            pass
    with pytest.raises(ModelNotReady):
        await anext(engine.stream("late", [5], params()))
    engine.close()  # idempotent


def test_idle_engine_thread_sleeps_and_stops(config: EngineConfig) -> None:
    engine = AsyncLLMEngine.from_config(config, idle_wait_s=0.05)
    time.sleep(0.2)
    assert engine.is_running
    assert engine.stats.num_steps == 0
    started = time.monotonic()
    engine.close()
    assert not engine.is_running
    assert time.monotonic() - started < 1.0


async def test_the_engine_is_built_on_its_own_thread(config: EngineConfig) -> None:
    # torch's OpenMP keeps a worker pool for each thread that ran parallel work; built on the
    # engine thread, the engine's loading and its steps share one pool.
    built_on: list[threading.Thread] = []

    def build() -> LLMEngine:
        built_on.append(threading.current_thread())
        return LLMEngine.from_config(config)

    engine = AsyncLLMEngine(build, idle_wait_s=0.05)
    try:
        assert [thread.name for thread in built_on] == ["inferd-llm-engine"]
        assert built_on[0] is not threading.current_thread() and built_on[0].is_alive()
        assert len(await collect(engine, "r0", prompts()[0])) == 12
    finally:
        engine.close()
    assert not built_on[0].is_alive()


def test_a_failed_build_raises_from_the_constructor() -> None:
    with pytest.raises(ConfigError, match="model_path is empty"):
        AsyncLLMEngine.from_config(EngineConfig(model_path=""))

    def build() -> LLMEngine:
        raise RuntimeError("weights are corrupt")

    with pytest.raises(RuntimeError, match="weights are corrupt"):
        AsyncLLMEngine(build)
