"""Issue 4's figures: inferd's LLM engine against transformers on the same random Llama.

    .venv/bin/python -m benchmarks.llm_engine [--requests 32] [--sequential 4] [--device cpu]

The model: hidden 512, 8 layers, 8 heads, intermediate 1536, vocab 32000, fp32, random
weights saved with ``save_pretrained``. Every figure comes from the same run on 2 threads:
(a) transformers ``generate`` one request at a time, (b) transformers on a static batch of all
requests, (c) the inferd engine with all requests at once, plus its KV fragmentation at peak,
(d) time to first token of a long prompt whose prefix was served before, against a cold one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from benchmarks.harness import save
from inferd.llm.checkpoint import load_arch_config
from inferd.llm.engine import EngineConfig, LLMEngine
from inferd.llm.runner import kv_block_bytes
from inferd.llm.sampling import SamplingParams

PROMPT_LEN = 128
NEW_TOKENS = 128
PREFIX_LEN = 1024
SUFFIX_LEN = 16
BLOCK_SIZE = 16
MAX_BATCHED_TOKENS = 2048
MODEL_SHAPE = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 1536,
    "max_position_embeddings": 2048,
}


def save_model(folder: Path) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**MODEL_SHAPE)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    return model


def random_prompts(num: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, MODEL_SHAPE["vocab_size"], (num, length), generator=generator).tolist()


def throughput(seconds: float, output_tokens: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "output_tokens": output_tokens,
        "tokens_per_s": output_tokens / seconds,
    }


def hf_generate(model: transformers.PreTrainedModel, prompts: list[list[int]]) -> dict[str, float]:
    """One ``generate`` call over left-padded prompts, greedy, exactly NEW_TOKENS each."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    seconds = time.perf_counter() - started
    return throughput(seconds, (out.shape[1] - width) * len(prompts))


def hf_sequential(
    model: transformers.PreTrainedModel, prompts: list[list[int]]
) -> dict[str, float]:
    runs = [hf_generate(model, [prompt]) for prompt in prompts]
    return throughput(sum(r["seconds"] for r in runs), sum(int(r["output_tokens"]) for r in runs))


def make_engine(
    path: Path,
    device: str,
    num_blocks: int,
    prefix_caching: bool,
    dtype: str = "float32",
    pack_weights: bool = True,
    compile: bool = False,
) -> LLMEngine:
    config = EngineConfig(
        model_path=str(path),
        dtype=dtype,
        device=device,
        block_size=BLOCK_SIZE,
        kv_cache_bytes=num_blocks * kv_block_bytes(load_arch_config(path), BLOCK_SIZE, dtype),
        max_num_seqs=256,
        max_num_batched_tokens=MAX_BATCHED_TOKENS,
        enable_prefix_caching=prefix_caching,
        pack_weights=pack_weights,
        compile=compile,
    )
    return LLMEngine.from_config(config)


def inferd_throughput(engine: LLMEngine, prompts: list[list[int]]) -> dict[str, float]:
    """All prompts at once; output tokens/s and the KV cache's occupancy at its fullest step."""
    params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True, temperature=0.0)
    started, first_step = time.perf_counter(), engine.num_steps
    for index, prompt in enumerate(prompts):
        engine.add_request(f"tp-{index}", prompt, params)
    num_tokens, peak = 0, engine.stats()
    while engine.has_unfinished():
        num_tokens += len(engine.step())
        stats = engine.stats()
        if stats.num_used_blocks > peak.num_used_blocks:
            peak = stats
    seconds = time.perf_counter() - started
    return {
        **throughput(seconds, num_tokens),
        "steps": engine.num_steps - first_step,
        "peak_blocks_used": peak.num_used_blocks,
        "peak_tokens_stored": peak.num_tokens_stored,
        "peak_fill": peak.num_tokens_stored / (peak.num_used_blocks * BLOCK_SIZE),
        "preemptions": engine.num_preemptions,
    }


def time_to_first_token(engine: LLMEngine, request_id: str, prompt: list[int]) -> float:
    started = time.perf_counter()
    engine.add_request(
        request_id, prompt, SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0)
    )
    while not engine.step():
        pass
    return time.perf_counter() - started


def prefix_ttft(engine: LLMEngine, repeats: int = 3) -> dict[str, float]:
    """TTFT of PREFIX_LEN + SUFFIX_LEN prompts: cold, and after another prompt with the prefix."""
    cold, warm = [], []
    for index in range(repeats):
        prefix, first, second = (
            random_prompts(1, PREFIX_LEN, 100 + index)[0],
            random_prompts(1, SUFFIX_LEN, 200 + index)[0],
            random_prompts(1, SUFFIX_LEN, 300 + index)[0],
        )
        cold.append(time_to_first_token(engine, f"cold-{index}", prefix + first))
        hits = engine.stats().prefix_cache_hits
        warm.append(time_to_first_token(engine, f"warm-{index}", prefix + second))
        assert engine.stats().prefix_cache_hits - hits >= PREFIX_LEN
    return {"cold_ms": statistics.median(cold) * 1e3, "cached_ms": statistics.median(warm) * 1e3}


def warm_up(engine: LLMEngine, model: transformers.PreTrainedModel) -> None:
    engine.generate(
        random_prompts(4, 64, 9), SamplingParams(max_tokens=8, ignore_eos=True, temperature=0.0)
    )
    with torch.inference_mode():
        model.generate(torch.tensor(random_prompts(2, 16, 9)), max_new_tokens=4, do_sample=False)


def compare(
    model: transformers.PreTrainedModel, engine: LLMEngine, args: argparse.Namespace
) -> dict[str, Any]:
    """(a), then (b) and (c) interleaved, best round of each: the machine is shared and noisy."""
    hf_rounds, inferd_rounds = [], []
    for round_index in range(args.rounds):
        # Fresh prompts each round, or the second would hit the prefix cache.
        prompts = random_prompts(args.requests, PROMPT_LEN, seed=1 + round_index)
        hf_rounds.append(hf_generate(model, prompts))
        inferd_rounds.append(inferd_throughput(engine, prompts))
    return {
        "hf_sequential": hf_sequential(model, random_prompts(args.sequential, PROMPT_LEN, 0)),
        "hf_static_batch": max(hf_rounds, key=lambda r: r["tokens_per_s"]),
        "inferd": max(inferd_rounds, key=lambda r: r["tokens_per_s"]),
        "rounds_tokens_per_s": {
            "hf_static_batch": [r["tokens_per_s"] for r in hf_rounds],
            "inferd": [r["tokens_per_s"] for r in inferd_rounds],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=4, help="requests timed one by one")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (b) and (c)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="both transformers and inferd compute in this precision",
    )
    parser.add_argument(
        "--no-decode-rows", action="store_true", help="gather KV blocks every step (the old path)"
    )
    parser.add_argument(
        "--no-pack", action="store_true", help="linear weights as loaded, not packed for oneDNN"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        model = save_model(path).to(args.device, getattr(torch, args.dtype))
        # Room for every request's 256 tokens plus the TTFT prompts: no preemption.
        num_blocks = args.requests * (PROMPT_LEN + NEW_TOKENS) // BLOCK_SIZE + 2 * 66
        engine = make_engine(path, args.device, num_blocks, True, args.dtype, not args.no_pack)
        if args.no_decode_rows and engine.runner.decode_cache is not None:
            engine.runner.decode_cache.max_bytes = 0  # every step falls back to gathering
        warm_up(engine, model)
        results: dict[str, Any] = compare(model, engine, args)
        results["prefix_ttft"] = prefix_ttft(engine)
    results["setup"] = {**vars(args), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS}
    print(render(results))
    name = "llm_engine" if args.threads == 2 else f"llm_engine_threads{args.threads}"
    name += "" if args.dtype == "float32" else f"_{args.dtype}"
    print(f"saved {save(name, results)}")


def render(results: dict[str, Any]) -> str:
    hf_seq, hf_batch, ours = (results[k] for k in ("hf_sequential", "hf_static_batch", "inferd"))
    ttft, num = results["prefix_ttft"], int(results["setup"]["requests"])
    rows = [
        ("transformers generate, one request at a time", f"{hf_seq['tokens_per_s']:.1f} tok/s"),
        (f"transformers generate, static batch of {num}", f"{hf_batch['tokens_per_s']:.1f} tok/s"),
        (f"inferd LLMEngine, {num} requests", f"{ours['tokens_per_s']:.1f} tok/s"),
        (
            "inferd KV at peak: blocks used, tokens stored",
            f"{ours['peak_blocks_used']:.0f} x {BLOCK_SIZE}, {ours['peak_tokens_stored']:.0f}"
            f" ({ours['peak_fill']:.1%} of the used slots)",
        ),
        (f"TTFT {PREFIX_LEN}+{SUFFIX_LEN} tokens, cold", f"{ttft['cold_ms']:.1f} ms"),
        (f"TTFT {PREFIX_LEN}+{SUFFIX_LEN} tokens, prefix cached", f"{ttft['cached_ms']:.1f} ms"),
    ]
    return "\n".join(["| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


if __name__ == "__main__":
    main()
