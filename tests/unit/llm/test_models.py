"""Model parity with transformers: logits, greedy decoding, batching and chunked prefill.

Each architecture gets a tiny random checkpoint written by ``save_pretrained``; inferd loads
it and runs it over a paged KV cache with 4-token blocks handed out in shuffled order.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_configs import GPT2_SHAPE, LLAMA_SHAPE  # noqa: E402

from inferd.errors import ConfigError  # noqa: E402
from inferd.llm.attention import (  # noqa: E402
    allocate_kv_cache,
    build_attention_batch,
    step_context,
)
from inferd.llm.checkpoint import (  # noqa: E402
    ModelArchConfig,
    RopeScaling,
    load_arch_config,
    supported_architectures,
)
from inferd.llm.models import MODELS, load_model, resolve_dtype  # noqa: E402
from inferd.llm.scheduler import ScheduledSequence  # noqa: E402

BLOCK_SIZE = 4
NUM_BLOCKS = 96
NUM_NEW_TOKENS = 20
PROMPTS = [[5, 17, 42, 99, 3, 64, 11, 8, 120, 33, 7], [9, 1, 250], [77, 31, 4, 4, 200, 18, 61]]

CONFIGS: dict[str, Callable[[], Any]] = {
    "llama": lambda: transformers.LlamaConfig(**LLAMA_SHAPE),
    "mistral": lambda: transformers.MistralConfig(**LLAMA_SHAPE),
    "qwen2": lambda: transformers.Qwen2Config(**LLAMA_SHAPE, tie_word_embeddings=True),
    "gpt2": lambda: transformers.GPT2Config(**GPT2_SHAPE),
    "llama3-rope": lambda: transformers.LlamaConfig(
        **LLAMA_SHAPE,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ),
    "linear-rope": lambda: transformers.LlamaConfig(
        **LLAMA_SHAPE, rope_scaling={"rope_type": "linear", "factor": 4.0}
    ),
}


@dataclasses.dataclass
class Pair:
    """A transformers model and the same checkpoint loaded by inferd."""

    reference: Any
    model: torch.nn.Module
    config: ModelArchConfig
    path: Path


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(CONFIGS[request.param]()).eval()
    path = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(path, safe_serialization=True)
    model, config = load_model(path, dtype=torch.float32)
    return Pair(reference, model, config, path)


class PagedSeq:
    def __init__(self, request_id: str, prompt: list[int]) -> None:
        self.request_id = request_id
        self.tokens = list(prompt)
        self.num_computed = 0
        self.block_table: list[int] = []


class PagedDriver:
    """A hand-rolled engine loop: shuffled block ids, chosen chunks, greedy sampling."""

    def __init__(self, model: torch.nn.Module, config: ModelArchConfig, seed: int = 0) -> None:
        self.model = model
        dtype = next(model.parameters()).dtype
        self.kv_cache = allocate_kv_cache(
            config.num_layers, NUM_BLOCKS, BLOCK_SIZE, config.num_kv_heads, config.head_dim, dtype
        )
        self.free_blocks = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(self.free_blocks)

    def chunk(self, seq: PagedSeq, num_new: int) -> ScheduledSequence:
        start, end = seq.num_computed, seq.num_computed + num_new
        while len(seq.block_table) * BLOCK_SIZE < end:
            seq.block_table.append(self.free_blocks.pop())
        positions = tuple(range(start, end))
        table = seq.block_table
        slots = tuple(table[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in positions)
        samples = end == len(seq.tokens)
        seq.num_computed = end
        return ScheduledSequence(
            seq.request_id, tuple(seq.tokens[start:end]), positions, slots, tuple(table), samples
        )

    def step(self, work: list[tuple[PagedSeq, int]], all_logits: bool = False) -> torch.Tensor:
        """Compute each (sequence, token count); logits of sampled rows (or of every row)."""
        chunks = [self.chunk(seq, n) for seq, n in work]
        batch = build_attention_batch(chunks, self.kv_cache)
        if all_logits:
            rows = torch.arange(batch.num_tokens)
            batch = dataclasses.replace(batch, logits_indices=rows)
        input_ids = torch.tensor([t for c in chunks for t in c.token_ids])
        positions = torch.tensor([p for c in chunks for p in c.positions])
        with torch.inference_mode(), step_context(batch):
            return self.model(input_ids, positions, batch.logits_indices)

    def generate(self, prompts: list[list[int]], num_tokens: int) -> list[list[int]]:
        """Greedy: all prompts prefilled in one step, then decoded together."""
        seqs = [PagedSeq(str(i), prompt) for i, prompt in enumerate(prompts)]
        work = [(seq, len(seq.tokens)) for seq in seqs]
        for _ in range(num_tokens):
            next_tokens = self.step(work).argmax(-1).tolist()
            for seq, token in zip(seqs, next_tokens, strict=True):
                seq.tokens.append(token)
            work = [(seq, 1) for seq in seqs]
        return [seq.tokens[len(prompt) :] for seq, prompt in zip(seqs, prompts, strict=True)]


def reference_logits(pair: Pair, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return pair.reference(torch.tensor([prompt])).logits[0].float()


def reference_generate(pair: Pair, prompt: list[int]) -> list[int]:
    ids = torch.tensor([prompt])
    pair.reference.generation_config.eos_token_id = None  # a random model may emit eos
    pair.reference.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = pair.reference.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NUM_NEW_TOKENS,
            do_sample=False,
        )
    return list(out[0, len(prompt) :].tolist())


def test_prefill_logits_match_transformers(pair: Pair) -> None:
    prompt = PROMPTS[0]
    logits = PagedDriver(pair.model, pair.config).step(
        [(PagedSeq("a", prompt), len(prompt))], all_logits=True
    )
    torch.testing.assert_close(logits, reference_logits(pair, prompt), atol=1e-4, rtol=1e-4)


def test_greedy_decode_matches_transformers_generate(pair: Pair) -> None:
    prompt = PROMPTS[0]
    tokens = PagedDriver(pair.model, pair.config).generate([prompt], NUM_NEW_TOKENS)
    assert len(set(tokens[0])) > 3  # a degenerate repeat would prove little
    assert tokens[0] == reference_generate(pair, prompt)


def test_batched_sequences_match_each_alone(pair: Pair) -> None:
    together = PagedDriver(pair.model, pair.config).generate(PROMPTS, NUM_NEW_TOKENS)
    alone = [
        PagedDriver(pair.model, pair.config, seed=i + 1).generate([prompt], NUM_NEW_TOKENS)[0]
        for i, prompt in enumerate(PROMPTS)
    ]
    assert together == alone


def test_chunked_prefill_matches_one_shot(pair: Pair) -> None:
    prompt, other = PROMPTS[0], PROMPTS[1]
    one_shot = PagedDriver(pair.model, pair.config).step([(PagedSeq("a", prompt), len(prompt))])
    driver = PagedDriver(pair.model, pair.config)
    a, b = PagedSeq("a", prompt), PagedSeq("b", other)
    first = driver.step([(a, 5), (b, len(other))])
    assert first.shape[0] == 1  # a's chunk stops short of its prompt, so only b samples
    b.tokens.append(int(first[0].argmax()))
    # The rest of a's prompt attends to its first 5 tokens through the cache, next to b's decode.
    second = driver.step([(b, 1), (a, len(prompt) - 5)])
    torch.testing.assert_close(second[1:], one_shot, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second[1], reference_logits(pair, prompt)[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(second[0], reference_logits(pair, b.tokens)[-1], atol=1e-4, rtol=0)


def test_rope_scaling_is_read(pair: Pair) -> None:
    scaling = pair.config.rope_scaling
    if pair.path.name.startswith("llama3-rope"):
        assert scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 32)
    elif pair.path.name.startswith("linear-rope"):
        assert scaling is not None and (scaling.rope_type, scaling.factor) == ("linear", 4.0)
    else:
        assert scaling is None


def test_sharded_checkpoint_loads_through_its_index(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(CONFIGS["llama"]()).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, config = load_model(tmp_path, dtype="float32")
    pair = Pair(reference, model, config, tmp_path)
    logits = PagedDriver(model, config).step([(PagedSeq("a", PROMPTS[1]), 3)], all_logits=True)
    torch.testing.assert_close(logits, reference_logits(pair, PROMPTS[1]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_close_to_fp32(pair: Pair, dtype: torch.dtype) -> None:
    model, config = load_model(pair.path, dtype=dtype)
    assert next(model.parameters()).dtype == dtype
    prompt = PROMPTS[2]
    logits = PagedDriver(model, config).step([(PagedSeq("a", prompt), len(prompt))])
    expected = reference_logits(pair, prompt)[-1]
    assert logits.dtype == torch.float32
    assert (logits[0] - expected).abs().max() < 0.1 * expected.abs().max()


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_transformers4_config_dialect(tmp_path: Path) -> None:
    raw = {
        "architectures": ["LlamaForCausalLM"],
        **{k: v for k, v in LLAMA_SHAPE.items() if k != "eos_token_id"},
        "eos_token_id": [2, 9],
        "rope_theta": 500000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "torch_dtype": "bfloat16",
    }
    config = load_arch_config(write_config(tmp_path, raw))
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == RopeScaling("linear", 2.0, original_max_position_embeddings=256)
    assert config.eos_token_ids == (2, 9)
    assert config.torch_dtype == "bfloat16"
    assert config.head_dim == 16 and config.num_queries_per_kv == 2


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json: file not found"):
        load_arch_config(tmp_path)
    unknown = write_config(tmp_path / "unknown", {"architectures": ["BertModel"]})
    with pytest.raises(ConfigError, match="'BertModel' is not supported"):
        load_arch_config(unknown)
    bad_rope = {
        "architectures": ["LlamaForCausalLM"],
        **LLAMA_SHAPE,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
    }
    with pytest.raises(ConfigError, match="yarn"):
        load_arch_config(write_config(tmp_path / "yarn", bad_rope))


def test_missing_weights_are_a_config_error(tmp_path: Path) -> None:
    folder = write_config(tmp_path, {"architectures": ["LlamaForCausalLM"], **LLAMA_SHAPE})
    with pytest.raises(ConfigError, match=r"no model\.safetensors"):
        load_model(folder)
    index = {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=r"model-00001-of-00002\.safetensors"):
        load_model(folder)


def test_every_parsed_architecture_has_a_model() -> None:
    assert set(MODELS) == set(supported_architectures())


def test_resolve_dtype() -> None:
    assert resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert resolve_dtype(None) is torch.float32
    with pytest.raises(ConfigError, match="int8"):
        resolve_dtype("int8")
