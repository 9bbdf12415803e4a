"""LLMEngine against transformers: greedy parity alone and under continuous batching.

Tiny random Llama and GPT-2 checkpoints are written with ``save_pretrained``; the engine loads
them through ``EngineConfig`` with a KV cache small enough to force preemption and a token
budget small enough to chunk prefills, and must still produce transformers' greedy tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_configs import GPT2_SHAPE, LLAMA_SHAPE  # noqa: E402

from inferd.errors import ConfigError, InvalidRequest  # noqa: E402
from inferd.llm.checkpoint import load_arch_config  # noqa: E402
from inferd.llm.engine import EngineConfig, LLMEngine  # noqa: E402
from inferd.llm.runner import kv_block_bytes, num_blocks_for_budget  # noqa: E402
from inferd.llm.sampling import SamplingParams  # noqa: E402
from inferd.llm.scheduler import StepOutput  # noqa: E402

BLOCK_SIZE = 4
NUM_NEW_TOKENS = 16

CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**LLAMA_SHAPE),
    "gpt2": lambda: transformers.GPT2Config(**GPT2_SHAPE),
}


def make_prompts(num_prompts: int, seed: int = 0) -> list[list[int]]:
    """Prompts of different lengths, from 3 to about 40 tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [3 + (i * 11) % 38 for i in range(num_prompts)]
    return [torch.randint(3, 256, (n,), generator=generator).tolist() for n in lengths]


@dataclass
class Checkpoint:
    path: Path
    reference: Any

    def generate(self, prompt: list[int], num_tokens: int = NUM_NEW_TOKENS) -> list[int]:
        """transformers' greedy tokens for one prompt alone."""
        ids = torch.tensor([prompt])
        config = self.reference.generation_config
        config.eos_token_id, config.pad_token_id = None, 0  # a random model may emit eos
        with torch.no_grad():
            out = self.reference.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=num_tokens, do_sample=False
            )
        return list(out[0, len(prompt) :].tolist())

    def engine(
        self,
        num_blocks: int = 256,
        max_num_batched_tokens: int = 256,
        enable_prefix_caching: bool = True,
    ) -> LLMEngine:
        block_bytes = kv_block_bytes(load_arch_config(self.path), BLOCK_SIZE, torch.float32)
        config = EngineConfig(
            model_path=str(self.path),
            dtype="float32",
            block_size=BLOCK_SIZE,
            kv_cache_bytes=num_blocks * block_bytes,
            max_num_seqs=8,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
        )
        return LLMEngine.from_config(config)


def save_checkpoint(name: str, folder: Path) -> Checkpoint:
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(CONFIGS[name]()).eval()
    reference.save_pretrained(folder, safe_serialization=True)
    return Checkpoint(folder, reference)


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return save_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def greedy(max_tokens: int = NUM_NEW_TOKENS, **kwargs: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0, **kwargs)


def assert_all_freed(engine: LLMEngine) -> None:
    stats = engine.stats()
    assert not engine.has_unfinished()
    assert (stats.num_used_blocks, stats.num_running, stats.num_waiting) == (0, 0, 0)
    assert stats.kv_cache_usage == 0.0


def test_greedy_matches_transformers_alone(checkpoint: Checkpoint) -> None:
    prompt = make_prompts(1)[0]
    engine = checkpoint.engine()
    [tokens] = engine.generate([prompt], greedy())
    assert len(set(tokens)) > 3  # a degenerate repeat would prove little
    assert tokens == checkpoint.generate(prompt)
    assert_all_freed(engine)


def test_continuous_batching_matches_transformers(checkpoint: Checkpoint) -> None:
    prompts = make_prompts(8, seed=1)
    max_tokens = [NUM_NEW_TOKENS - i % 3 * 4 for i in range(len(prompts))]
    # 40 blocks of 4 hold 160 tokens, the 8 sequences need about 370: some get preempted
    # and recomputed. A 24-token budget cuts every long prompt into chunks.
    engine = checkpoint.engine(num_blocks=40, max_num_batched_tokens=24)
    outputs = engine.generate(prompts, [greedy(n) for n in max_tokens])
    expected = [checkpoint.generate(p, n) for p, n in zip(prompts, max_tokens, strict=True)]
    assert outputs == expected
    assert engine.num_preemptions > 0
    stats = engine.stats()
    assert stats.num_generation_tokens == sum(max_tokens)
    assert stats.num_prompt_tokens == sum(len(p) for p in prompts)
    assert stats.num_computed_tokens > stats.num_prompt_tokens + stats.num_generation_tokens - 8
    assert_all_freed(engine)


def test_prefix_cache_hits_and_changes_nothing(checkpoint: Checkpoint) -> None:
    prefix = make_prompts(3, seed=2)[2]  # 25 tokens: 6 full blocks
    first, second = [*prefix, 7, 8, 9], [*prefix, 10, 11]
    engine = checkpoint.engine()
    engine.generate([first], greedy())
    hits_before = engine.stats().prefix_cache_hits
    [cached] = engine.generate([second], greedy())
    stats = engine.stats()
    assert stats.prefix_cache_hits - hits_before == 24
    assert stats.prefix_cache_queries == len(first) + len(second)
    uncached = checkpoint.engine(enable_prefix_caching=False)
    assert cached == uncached.generate([second], greedy())[0] == checkpoint.generate(second)
    assert uncached.stats().prefix_cache_hits == 0


def test_abort_frees_blocks(checkpoint: Checkpoint) -> None:
    engine = checkpoint.engine(num_blocks=24, max_num_batched_tokens=16)
    prompts = make_prompts(4, seed=3)
    for index, prompt in enumerate(prompts):
        engine.add_request(f"r{index}", prompt, greedy(20))
    for _ in range(3):
        engine.step()
    assert engine.stats().num_used_blocks > 0
    assert engine.abort("r0")  # running
    assert engine.abort("r3")  # still waiting for blocks
    assert not engine.abort("r0")
    assert not engine.abort("unknown")
    finished: set[str] = set()
    while engine.has_unfinished():
        finished |= {out.request_id for out in engine.step() if out.finished}
    assert finished == {"r1", "r2"}
    assert_all_freed(engine)


def test_stop_token_ends_generation_and_is_kept(checkpoint: Checkpoint) -> None:
    prompt = make_prompts(2)[1]
    expected = checkpoint.generate(prompt)
    stop = expected[5]
    cut = expected[: expected.index(stop) + 1]
    engine = checkpoint.engine()
    assert engine.generate([prompt], greedy(stop_token_ids=frozenset({stop}))) == [cut]


def test_requests_that_cannot_be_served_are_refused(checkpoint: Checkpoint) -> None:
    engine = checkpoint.engine()
    with pytest.raises(InvalidRequest, match="context of 256 tokens"):
        engine.add_request("long", [5] * 250, greedy(10))
    with pytest.raises(InvalidRequest, match="outside"):
        engine.add_request("vocab", [5, 999], greedy())
    with pytest.raises(InvalidRequest, match="max_tokens"):
        SamplingParams(max_tokens=0)
    assert not engine.has_unfinished()


def test_seeded_sampling_repeats_alone_and_beside_others(checkpoint: Checkpoint) -> None:
    hot = SamplingParams(max_tokens=12, ignore_eos=True, temperature=1.5, top_k=50, seed=7)
    prompt = make_prompts(1, seed=4)[0]
    (alone,) = checkpoint.engine().generate([prompt], hot)
    crowd = checkpoint.engine().generate([*make_prompts(5, seed=5), prompt], [greedy()] * 5 + [hot])
    (greedy_tokens,) = checkpoint.engine().generate([prompt], greedy(12))
    assert crowd[-1] == alone
    assert alone != greedy_tokens  # temperature 1.5 over 12 tokens leaves the argmax path


def test_logprobs_come_with_the_tokens_that_asked(checkpoint: Checkpoint) -> None:
    engine = checkpoint.engine()
    engine.add_request("lp", [5, 6, 7], greedy(4, logprobs=True, top_logprobs=3))
    engine.add_request("plain", [5, 6, 7], greedy(4))
    outputs: dict[str, list[StepOutput]] = {"lp": [], "plain": []}
    while engine.has_unfinished():
        for out in engine.step():
            outputs[out.request_id].append(out)
    for out in outputs["lp"]:
        assert out.logprob is not None and out.logprob <= 0
        assert out.top_logprobs is not None and len(out.top_logprobs) == 3
        best_id, best_logprob = out.top_logprobs[0]
        assert best_id == out.token_id  # greedy picks the most likely token
        assert best_logprob == pytest.approx(out.logprob)
        assert [lp for _, lp in out.top_logprobs] == sorted(
            (lp for _, lp in out.top_logprobs), reverse=True
        )
    assert all(out.logprob is None and out.top_logprobs is None for out in outputs["plain"])
    assert [o.token_id for o in outputs["lp"]] == [o.token_id for o in outputs["plain"]]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model_path", "", "model_path"),
        ("dtype", "int8", "dtype 'int8'"),
        ("device", "tpu9", "device = 'tpu9'"),
        ("block_size", 0, "block_size = 0"),
        ("kv_cache_bytes", -1, "kv_cache_bytes = -1"),
        ("max_num_seqs", 0, "max_num_seqs = 0"),
        ("max_num_batched_tokens", 0, "max_num_batched_tokens = 0"),
    ],
)
def test_config_validate_names_the_field(field: str, value: object, message: str) -> None:
    config = EngineConfig(**{"model_path": "/models/x", field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_num_blocks_for_budget(tmp_path: Path) -> None:
    arch = save_checkpoint("llama", tmp_path).path
    config = load_arch_config(arch)
    # K and V, 2 layers, 4 tokens, 2 KV heads of 16 dims, 4 bytes each.
    assert kv_block_bytes(config, 4, torch.float32) == 2 * 2 * 4 * 2 * 16 * 4
    assert kv_block_bytes(config, 4, "bfloat16") == 2 * 2 * 4 * 2 * 16 * 2
    assert num_blocks_for_budget(config, 4, torch.float32, 10 * 2048 + 5) == 10
    with pytest.raises(ConfigError, match="kv_cache_bytes"):
        num_blocks_for_budget(config, 4, torch.float32, 1000)


def test_bf16_engine_runs_with_a_bf16_cache(tmp_path: Path) -> None:
    save_checkpoint("llama", tmp_path)
    config = EngineConfig(
        model_path=str(tmp_path), dtype="bfloat16", block_size=BLOCK_SIZE, kv_cache_bytes=1 << 20
    )
    engine = LLMEngine.from_config(config)
    assert engine.runner.kv_cache.dtype == torch.bfloat16
    assert engine.runner.num_blocks == (1 << 20) // (2 * 2 * 4 * 2 * 16 * 2)
    outputs = engine.generate(make_prompts(3), greedy(8))
    assert [len(tokens) for tokens in outputs] == [8, 8, 8]
    assert engine.stats().num_generation_tokens == 24
