"""Issue 7's LLM figures: int8 weights (and w8a8) against fp32, size, speed and accuracy.

    .venv/bin/python -m benchmarks.llm_quant [--model PATH] [--threads 1] [--rounds 3]

Every figure compares against fp32 measured in the same run, in interleaved rounds:

1. kernels: one linear layer of the demo LLM's and the issue's shapes at 1 to 64 rows: fp32
   ``F.linear`` against torch's packed int8 kernel (bf16 activations), the weight dequantized
   to fp32 for one fp32 GEMM, or widened to bf16 for one bf16 GEMM, w8a8 (int8 rows per-row
   scaled, int32 accumulation) and the layer itself (``int8``: the kernel it picks for that
   many rows, and its Python around it); each call timed alone after an
   eviction of the caches, as in a decode step, where attention runs between two layers
   (back-to-back calls, with weights and library code in cache, give other ratios); medians of
   interleaved rounds, ratios to fp32.
2. accuracy on a trained model (the demo LLM, trained on Python's docs; ``--model`` for
   another): mean next-token KL and greedy agreement against fp32 over the 16 fixed prompts
   continued 128 tokens, decoded one at a time (the packed kernel) and all together (the others).
3. weights bytes and decode throughput through the real ``LLMEngine`` at batch 1 and 32, on the
   trained model and on the issue's shape (Llama, hidden 512, 8 layers, vocab 32,000, random):
   tokens/s, and p50/p99 decode step latency; the engines take turns in a shuffled order each
   round, and the ratio to fp32 is the median of the rounds' ratios (``--rounds``: this
   shared machine moves by 1.5x within minutes). ``--skip speed`` leaves the trained model's
   speed out, ``--skip issue`` the issue's shape, ``--variants fp32,int8,w8a8`` the int8 KV
   cache. The fp32 engine is ``EngineConfig``'s default for fp32.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from benchmarks.harness import RESULTS, save
from inferd.llm.engine import EngineConfig, LLMEngine
from inferd.llm.models import load_model
from inferd.llm.quant import (
    EVAL_PROMPTS,
    Int8Linear,
    compare_greedy,
    evaluation_prompts,
    quantize_model,
    weight_bytes,
)
from inferd.llm.sampling import SamplingParams

MODES = ("none", "int8", "w8a8")
VARIANTS = {  # name: (EngineConfig.quantization, EngineConfig.kv_cache_dtype)
    "fp32": ("none", "auto"),
    "int8": ("int8", "auto"),
    "w8a8": ("w8a8", "auto"),
    "fp32+kv8": ("none", "int8"),
    "w8a8+kv8": ("w8a8", "int8"),
}
KERNEL_SHAPES = (  # (in, out): the demo LLM's o, qkv, down and head; the issue's o, qkv, down
    (256, 256), (256, 512), (768, 256), (256, 4096), (512, 512), (512, 1536), (1536, 512),
)  # fmt: skip
KERNEL_ROWS = (1, 8, 16, 32, 64)
EVICTION_BYTES = 8 << 20  # more than L2: a decode step's attention reads about as much
PROMPT_LEN = 32
NEW_TOKENS = 64
ISSUE_SHAPE: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 1536,
    "max_position_embeddings": 2048,
}


def cold_us(fn: Callable[[], object], repeats: int, evict: Callable[[], object]) -> float:
    """Median µs of ``fn``, each call timed alone right after ``evict``."""
    times = []
    for _ in range(repeats):
        evict()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 7) -> dict[str, float]:
    """Median µs per call of each function, timed in turn, round after round, caches evicted."""
    scratch = torch.zeros(EVICTION_BYTES // 4)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(cold_us(fn, 10, lambda: scratch.add_(1)))
    return {name: statistics.median(values) for name, values in times.items()}


def kernels() -> list[dict[str, Any]]:
    """Section 1: each kernel at each shape and row count, with its ratio to fp32."""
    rows_out = []
    for in_features, out_features in KERNEL_SHAPES:
        torch.manual_seed(0)
        linear = torch.nn.Linear(in_features, out_features, bias=False)
        layer = Int8Linear.from_linear(linear)
        for num_rows in KERNEL_ROWS:
            micros = _time_kernels(linear, layer, torch.randn(num_rows, in_features))
            rows_out.append({"k": in_features, "n": out_features, "rows": num_rows, "us": micros})
            print(f"  kernel {in_features}x{out_features} rows {num_rows}: {_fmt_us(micros)}")
    return rows_out


def _time_kernels(linear: torch.nn.Linear, layer: Int8Linear, x: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        return interleaved(
            {
                "fp32": lambda: F.linear(x, linear.weight),
                "packed": lambda: layer.matmul_packed(x).float(),
                "dequantized": lambda: layer.matmul_dequantized(x),
                "widened": lambda: layer.matmul_widened(x),
                "w8a8": lambda: layer.matmul_w8a8(x),
                "int8": lambda: layer(x),
            }
        )


def _fmt_us(micros: dict[str, float]) -> str:
    base = micros["fp32"]
    return ", ".join(f"{k} {v:.0f} µs ({base / v:.2f}x)" for k, v in micros.items())


def trained_model(args: argparse.Namespace) -> Path:
    """``--model``, else the demo LLM trained once into .bench/ (minutes, then cached)."""
    if args.model is not None:
        return Path(args.model)
    folder = RESULTS / f"llm_quant_tiny_llama_{args.train_seconds:g}s"
    if not (folder / "model.safetensors").is_file():
        from inferd.demo.llm import build_tiny_llama

        print(f"training the demo LLM for {args.train_seconds:g} s into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        build_tiny_llama(folder, args.train_seconds)
    return folder


def accuracy(path: Path, batch_sizes: list[int]) -> dict[str, Any]:
    """Section 2: KL and greedy agreement of each mode against fp32, per decode batch size."""
    reference, arch = _load(path, "none")
    prompts = evaluation_prompts(path, arch)
    results: dict[str, Any] = {"prompts": list(EVAL_PROMPTS), "num_tokens": 128}
    # bf16: a plain cast, for scale; kv8: the int8 KV cache, with fp32 or int8 weights.
    for mode in (*MODES[1:], "bf16", "fp32+kv8", "int8+kv8"):
        candidate, _ = _load(path, mode.removesuffix("+kv8"))
        kv_cache_dtype = "int8" if mode.endswith("+kv8") else "auto"
        for batch_size in batch_sizes if mode in MODES else batch_sizes[-1:]:
            parts = [
                compare_greedy(
                    reference, candidate, arch, prompts[i : i + batch_size], 128, kv_cache_dtype
                )
                for i in range(0, len(prompts), batch_size)
            ]
            count = sum(p.num_prompts for p in parts)
            entry = {
                "mean_kl": sum(p.mean_kl * p.num_prompts for p in parts) / count,
                "greedy_agreement": sum(p.greedy_agreement * p.num_prompts for p in parts) / count,
                "identical_sequences": sum(p.identical_sequences for p in parts),
                "num_prompts": count,
            }
            results[f"{mode}_batch{batch_size}"] = entry
            print(f"  accuracy {mode} decode batch {batch_size}: {entry}")
    return results


def _load(path: Path, mode: str) -> tuple[torch.nn.Module, Any]:
    model, arch = load_model(path, "bfloat16" if mode == "bf16" else "float32")
    if mode in MODES[1:]:
        quantize_model(model, mode)
    return model, arch


def engine_speed(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Section 3: weight bytes, decode tokens/s and step latency per mode and batch size."""
    names = ["fp32", *(name for name in args.variants.split(",") if name != "fp32")]
    engines = {name: _engine(path, *VARIANTS[name]) for name in names}
    fp32_model, _ = load_model(path, "float32")  # as loaded: the engine may repack its weights
    models = {m: fp32_model if m.startswith("fp32") else e.runner.model for m, e in engines.items()}
    results: dict[str, Any] = {
        "weights_bytes": {mode: weight_bytes(model) for mode, model in models.items()},
        "linear_bytes": {m: weight_bytes(model, linear_only=True) for m, model in models.items()},
        "fp32_weights_bytes": weight_bytes(fp32_model),
        "kv_blocks_in_256MB": {mode: e.runner.num_blocks for mode, e in engines.items()},
    }
    vocab = engines["fp32"].arch.vocab_size
    for batch_size in (1, 32):
        steps: dict[str, list[float]] = {mode: [] for mode in engines}
        rates: dict[str, list[float]] = {mode: [] for mode in engines}
        for round_index in range(args.rounds + 1):  # round 0 warms up
            prompts = _prompts(batch_size, vocab, seed=round_index)
            order = random.Random(round_index).sample(names, len(names))
            for mode in order:
                step_times = _decode(engines[mode], prompts)
                if round_index:
                    steps[mode] += step_times
                    rates[mode].append(batch_size * len(step_times) / sum(step_times))
        results[f"batch{batch_size}"] = {
            mode: {
                "tokens_per_s": statistics.median(rates[mode]),
                "rounds_tokens_per_s": rates[mode],
                "ratio_to_fp32": statistics.median(
                    a / b for a, b in zip(rates[mode], rates["fp32"], strict=True)
                ),
                "step_p50_ms": _percentile(steps[mode], 50) * 1e3,
                "step_p99_ms": _percentile(steps[mode], 99) * 1e3,
            }
            for mode in engines
        }
        print(f"  speed batch {batch_size}: {results[f'batch{batch_size}']}")
    return results


def _engine(path: Path, mode: str, kv_cache_dtype: str) -> LLMEngine:
    config = EngineConfig(
        model_path=str(path),
        dtype="float32",
        kv_cache_bytes=256 << 20,
        max_num_seqs=64,
        enable_prefix_caching=False,  # every round's prefill is real work
        quantization=mode,
        kv_cache_dtype=kv_cache_dtype,
    )
    return LLMEngine.from_config(config)


def _prompts(num: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (num, PROMPT_LEN), generator=generator).tolist()


def _decode(engine: LLMEngine, prompts: list[list[int]]) -> list[float]:
    """Seconds of each decode step (every step after the first, which prefills them all)."""
    params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True, temperature=0.0)
    for index, prompt in enumerate(prompts):
        engine.add_request(f"r{time.monotonic_ns()}-{index}", prompt, params)
    engine.step()
    times = []
    while engine.has_unfinished():
        started = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - started)
    return times


def _percentile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def issue_shape_model(folder: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**ISSUE_SHAPE)
    model = transformers.AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="a trained checkpoint folder (default: the demo LLM)")
    parser.add_argument("--train-seconds", type=float, default=180.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--accuracy-batches", default="1,16", help="decode batch sizes")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="engines in section 3")
    parser.add_argument("--skip", default="", help="skip: kernels,accuracy,speed,issue")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"setup": vars(args)}
    if "kernels" not in skip:
        print("1. kernels")
        results["kernels"] = kernels()
    path = trained_model(args)
    if "accuracy" not in skip:
        print(f"2. accuracy on {path}")
        batches = [int(b) for b in args.accuracy_batches.split(",")]
        results["accuracy"] = accuracy(path, batches)
    if "speed" not in skip:
        print(f"3. engine speed on {path}")
        results["speed_trained"] = engine_speed(path, args)
    if "issue" not in skip:
        with tempfile.TemporaryDirectory() as folder:
            print("3. engine speed on the issue's shape (random weights)")
            results["speed_issue_shape"] = engine_speed(issue_shape_model(Path(folder)), args)
    print(render(results))
    print(f"saved {save('llm_quant', results)}")


def render(results: dict[str, Any]) -> str:
    lines = []
    if "accuracy" in results:
        lines += ["| mode | decode batch | mean KL (nats) | greedy agreement | identical |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for key, entry in results["accuracy"].items():
            if isinstance(entry, dict):
                mode, batch = key.split("_batch")
                lines.append(
                    f"| {mode} | {batch} | {entry['mean_kl']:.5f} | "
                    f"{entry['greedy_agreement']:.2%} | "
                    f"{entry['identical_sequences']}/{entry['num_prompts']} |"
                )
    for name in ("speed_trained", "speed_issue_shape"):
        if name not in results:
            continue
        speed = results[name]
        fp32 = speed["fp32_weights_bytes"]
        lines += ["", f"{name}: weights " + ", ".join(
            f"{m} {b / 1e6:.1f} MB ({b / fp32:.1%})" for m, b in speed["weights_bytes"].items()
        ), "KV blocks in 256 MB: " + ", ".join(
            f"{m} {n}" for m, n in speed["kv_blocks_in_256MB"].items()
        ), "| mode | batch | tokens/s | ratio to fp32 | step p50 ms | step p99 ms |",
            "|---|---|---|---|---|---|"]  # fmt: skip
        for batch in (1, 32):
            for mode, entry in speed[f"batch{batch}"].items():
                lines.append(
                    f"| {mode} | {batch} | {entry['tokens_per_s']:.1f} | "
                    f"{entry['ratio_to_fp32']:.2f}x | {entry['step_p50_ms']:.1f} | "
                    f"{entry['step_p99_ms']:.1f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
