"""Packed linear weights (``llm/packed.py``) against the weights as loaded, and transformers.

    .venv/bin/python -m benchmarks.llm_packing [--dtype float32|bfloat16] [--rounds 4]

``benchmarks.llm_engine``'s model and workload (32 requests of 128 prompt + 128 output tokens,
greedy, in-process, 2 threads). Each round runs transformers' static batch, the engine with
``pack_weights=False`` and the engine with packed weights, back to back on fresh prompts;
prints each round and the medians. Checks first that both engines decode the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.harness import save
from benchmarks.llm_engine import (
    BLOCK_SIZE,
    NEW_TOKENS,
    PROMPT_LEN,
    hf_generate,
    inferd_throughput,
    make_engine,
    random_prompts,
    save_model,
)
from inferd.llm.sampling import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_blocks = args.requests * (PROMPT_LEN + NEW_TOKENS) // BLOCK_SIZE + 8
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        reference = save_model(path).to(getattr(torch, args.dtype))
        engines = {
            name: make_engine(path, "cpu", num_blocks, False, args.dtype, pack_weights=pack)
            for name, pack in (("as_loaded", False), ("packed", True))
        }
        greedy = SamplingParams(max_tokens=32, ignore_eos=True, temperature=0.0)
        prompts = random_prompts(4, 32, 5)
        same = engines["packed"].generate(prompts, greedy) == engines["as_loaded"].generate(
            prompts, greedy
        )
        print(f"greedy tokens identical: {same}")
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            prompts = random_prompts(args.requests, PROMPT_LEN, 10 + index)
            figures = {"transformers": hf_generate(reference, prompts)["tokens_per_s"]}
            for name, engine in engines.items():
                figures[name] = inferd_throughput(engine, prompts)["tokens_per_s"]
            print("round", index + 1, {k: round(v) for k, v in figures.items()}, flush=True)
            rounds.append(figures)
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratios = {
        "packed / as_loaded": statistics.median(r["packed"] / r["as_loaded"] for r in rounds),
        "packed / transformers": statistics.median(r["packed"] / r["transformers"] for r in rounds),
        "as_loaded / transformers": statistics.median(
            r["as_loaded"] / r["transformers"] for r in rounds
        ),
    }
    print("medians, tok/s:", {k: round(v) for k, v in medians.items()})
    print("medians of the rounds' ratios:", {k: round(v, 2) for k, v in ratios.items()})
    results = {"setup": vars(args), "identical": same, "rounds": rounds, "ratios": ratios}
    print(f"saved {save(f'llm_packing_{args.dtype}', results)}")


if __name__ == "__main__":
    main()
