"""``[llm] compile`` against the eager engine, step by step in one process.

    .venv/bin/python -m benchmarks.llm_compile [--rounds 3] [--dtype float32|bfloat16]

Two engines on ``benchmarks.llm_engine``'s model (random weights): one eager with packed
weights (the default), one compiled (``EngineConfig(compile=True)``). Each round gives both the
same 32 requests of 128 prompt and 128 output tokens and steps them alternately, one step of
each in turn, so that both see the machine in the same state to within milliseconds: this VM's
speed drifts by 15% between windows seconds apart, which whole-run A/B figures cannot separate
from a 10% effect. Reported per round: total time of each, the prefill steps, the median decode
step, and the median of the per-step time ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import save
from benchmarks.llm_engine import (
    BLOCK_SIZE,
    MAX_BATCHED_TOKENS,
    NEW_TOKENS,
    PROMPT_LEN,
    make_engine,
    random_prompts,
    save_model,
)
from inferd.llm.engine import LLMEngine
from inferd.llm.sampling import SamplingParams

GREEDY = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True, temperature=0.0)


def timed_step(engine: LLMEngine, into: list[float]) -> None:
    started = time.perf_counter()
    engine.step()
    into.append(time.perf_counter() - started)


def one_round(
    eager: LLMEngine, compiled: LLMEngine, prompts: list[list[int]], tag: str
) -> dict[str, float]:
    for engine in (eager, compiled):
        for index, prompt in enumerate(prompts):
            engine.add_request(f"{tag}-{index}", prompt, GREEDY)
    eager_s: list[float] = []
    compiled_s: list[float] = []
    while eager.has_unfinished() or compiled.has_unfinished():
        if eager.has_unfinished():
            timed_step(eager, eager_s)
        if compiled.has_unfinished():
            timed_step(compiled, compiled_s)
    # Both schedule the same steps: prefill (the token budget over the prompts), then decodes.
    prefill = -(-len(prompts) * PROMPT_LEN // MAX_BATCHED_TOKENS)
    return {
        "eager_s": sum(eager_s),
        "compiled_s": sum(compiled_s),
        "speedup": sum(eager_s) / sum(compiled_s),
        "eager_prefill_s": sum(eager_s[:prefill]),
        "compiled_prefill_s": sum(compiled_s[:prefill]),
        "eager_decode_ms": statistics.median(eager_s[prefill:]) * 1e3,
        "compiled_decode_ms": statistics.median(compiled_s[prefill:]) * 1e3,
        "median_step_speedup": statistics.median(
            e / c for e, c in zip(eager_s, compiled_s, strict=False)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        save_model(path)
        num_blocks = args.requests * (PROMPT_LEN + NEW_TOKENS) // BLOCK_SIZE + 64
        eager = make_engine(path, "cpu", num_blocks, True, args.dtype)
        started = time.perf_counter()
        compiled = make_engine(path, "cpu", num_blocks, True, args.dtype, compile=True)
        compile_s = time.perf_counter() - started
        eager.warm_up()
        rounds = []
        for index in range(args.rounds):
            prompts = random_prompts(args.requests, PROMPT_LEN, seed=1 + index)
            figures = one_round(eager, compiled, prompts, f"r{index}")
            print("round", index + 1, {k: round(v, 3) for k, v in figures.items()}, flush=True)
            rounds.append(figures)
    results: dict[str, Any] = {
        "load_and_compile_s": compile_s,
        "rounds": rounds,
        "median": {key: statistics.median(r[key] for r in rounds) for key in rounds[0]},
        "setup": {**vars(args), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS},
    }
    print(f"load + compile: {compile_s:.1f} s")
    print("medians:", {k: round(v, 3) for k, v in results["median"].items()})
    print(f"saved {save(f'llm_compile_{args.dtype}', results)}")


if __name__ == "__main__":
    main()
