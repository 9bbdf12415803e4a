"""Issue 4's figures over HTTP: ``inferd serve`` behind the OpenAI API against transformers.

    .venv/bin/python -m benchmarks.llm_serving [--requests 32] [--rounds 2] [--threads 2]

The model is ``benchmarks.llm_engine``'s (Llama, hidden 512, 8 layers, 8 heads, intermediate
1536, vocab 32000, fp32, random weights), with a 32,000-token word-level tokenizer so that the
server detokenizes every output token as it would for a real checkpoint. Every figure comes
from one run, the server and transformers taking turns on the same cores:
(a) transformers ``generate`` one request at a time, (b) transformers on a static batch of all
requests (left padded), (c) the same requests sent at once to ``inferd serve`` through the
official ``openai`` client (token-id prompts of 128 tokens, 128 output tokens each, streamed),
(d) time to first token over the API for a 1,040-token prompt whose first 1,024 tokens were
served before, against a cold one.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from benchmarks.harness import ROOT, free_port, save
from benchmarks.llm_engine import (
    MODEL_SHAPE,
    NEW_TOKENS,
    PREFIX_LEN,
    PROMPT_LEN,
    SUFFIX_LEN,
    hf_generate,
    hf_sequential,
    random_prompts,
    save_model,
)

MODEL = "bench_llama"
NO_EOS = {"ignore_eos": True}  # random weights: every request generates all its tokens


def write_tokenizer(folder: Path) -> None:
    vocab = {f"w{i}": i for i in range(MODEL_SHAPE["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text('{"eos_token": "w2", "bos_token": "w1"}')


def start_server(
    folder: Path, threads: int, num_seqs: int, dtype: str
) -> tuple[subprocess.Popen[bytes], str]:
    element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    tokens = num_seqs * (PROMPT_LEN + NEW_TOKENS) + 4 * 1100
    kv_mb = 2 * 8 * 512 * element * tokens // (1 << 20) + 16
    (folder / "model.toml").write_text(
        f'name = "{MODEL}"\nbackend = "llm"\nthreads = {threads}\n\n'
        f'[llm]\ndtype = "{dtype}"\nkv_cache_mb = {kv_mb}\nmax_num_seqs = {max(num_seqs, 64)}\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferd", "serve", str(folder), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("inferd did not become ready")


async def one_request(
    client: openai.AsyncOpenAI, prompt: list[int], max_tokens: int
) -> tuple[float, int]:
    """Stream one completion; (seconds to its first token, output tokens)."""
    started = time.perf_counter()
    first = None
    stream = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=NO_EOS,
    )  # fmt: skip
    tokens = 0
    async for chunk in stream:
        if chunk.choices and first is None:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    assert first is not None
    return first, tokens


async def served_throughput(url: str, prompts: list[list[int]]) -> dict[str, float]:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, p, NEW_TOKENS) for p in prompts))
        seconds = time.perf_counter() - started
    tokens = sum(t for _, t in results)
    assert tokens == NEW_TOKENS * len(prompts), tokens
    return {
        "seconds": seconds,
        "output_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "ttft_median_ms": statistics.median(f for f, _ in results) * 1e3,
    }


async def served_prefix_ttft(url: str, repeats: int = 3) -> dict[str, float]:
    cold, warm = [], []
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:
        for index in range(repeats):
            prefix = random_prompts(1, PREFIX_LEN, 100 + index)[0]
            first = random_prompts(1, SUFFIX_LEN, 200 + index)[0]
            second = random_prompts(1, SUFFIX_LEN, 300 + index)[0]
            cold.append((await one_request(client, prefix + first, 1))[0])
            warm.append((await one_request(client, prefix + second, 1))[0])
    return {"cold_ms": statistics.median(cold) * 1e3, "cached_ms": statistics.median(warm) * 1e3}


def compare(models: dict[str, Any], url: str, args: argparse.Namespace) -> dict[str, Any]:
    """(a), then (b) and (c) interleaved, best round of each: the machine is shared and noisy.

    ``models`` holds transformers' model in each reference precision; the served model computes
    in ``args.dtype``, which is always one of them.
    """
    asyncio.run(served_throughput(url, random_prompts(4, 16, 9)))  # warm-up
    hf_rounds: dict[str, list[dict[str, float]]] = {dtype: [] for dtype in models}
    served_rounds = []
    for round_index in range(args.rounds):
        prompts = random_prompts(args.requests, PROMPT_LEN, seed=1 + round_index)
        for dtype, model in models.items():
            hf_rounds[dtype].append(hf_generate(model, prompts))
        served_rounds.append(asyncio.run(served_throughput(url, prompts)))
    sequential = random_prompts(args.sequential, PROMPT_LEN, 0)
    return {
        "hf_sequential": {d: hf_sequential(m, sequential) for d, m in models.items()},
        "hf_static_batch": {
            d: max(rounds, key=lambda r: r["tokens_per_s"]) for d, rounds in hf_rounds.items()
        },
        "inferd_openai": max(served_rounds, key=lambda r: r["tokens_per_s"]),
        "rounds_tokens_per_s": {
            **{
                f"hf_static_batch_{d}": [r["tokens_per_s"] for r in rs]
                for d, rs in hf_rounds.items()
            },
            "inferd_openai": [r["tokens_per_s"] for r in served_rounds],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=2, help="requests timed one by one")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the served model's precision; transformers runs in it too (and in float32)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / MODEL
        folder.mkdir()
        model = save_model(folder)
        write_tokenizer(folder)
        models = {"float32": model}
        if args.dtype != "float32":
            models[args.dtype] = copy.deepcopy(model).to(getattr(torch, args.dtype))
        proc, url = start_server(folder, args.threads, args.requests, args.dtype)
        try:
            results = compare(models, url, args)
            results["prefix_ttft"] = asyncio.run(served_prefix_ttft(url))
            results["metrics"] = kv_metrics(url)
        finally:
            proc.terminate()
            proc.wait(30)
    results["setup"] = {**vars(args), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS}
    print(render(results))
    name = "llm_serving" if args.dtype == "float32" else f"llm_serving_{args.dtype}"
    print(f"saved {save(name, results)}")


def kv_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    wanted = ("inferd_llm_preemptions_total", "inferd_llm_prefix_cache_hit_ratio")
    found = {}
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(name + "{"):
                found[name] = float(line.rsplit(" ", 1)[1])
    return found


def render(results: dict[str, Any]) -> str:
    seqs, batches = results["hf_sequential"], results["hf_static_batch"]
    ours = results["inferd_openai"]
    ttft, num = results["prefix_ttft"], int(results["setup"]["requests"])
    dtype = results["setup"]["dtype"]
    rows = []
    for ref in seqs:
        seq, batch = seqs[ref]["tokens_per_s"], batches[ref]["tokens_per_s"]
        rows += [
            (f"transformers generate {ref}, one request at a time", f"{seq:.1f} tok/s"),
            (f"transformers generate {ref}, static batch of {num}", f"{batch:.1f} tok/s"),
            (
                f"inferd serve {dtype} against transformers {ref}",
                f"{ours['tokens_per_s'] / seq:.1f}x one-at-a-time, "
                f"{ours['tokens_per_s'] / batch:.2f}x static batch",
            ),
        ]
    rounds = results["rounds_tokens_per_s"]
    medians = {k: statistics.median(v) for k, v in rounds.items()}
    served = medians["inferd_openai"]
    rows += [
        (
            f"inferd serve {dtype}, {num} concurrent OpenAI streams",
            f"{ours['tokens_per_s']:.1f} tok/s (best round; median {served:.1f})",
        ),
        *(
            (
                f"median of rounds: inferd serve {dtype} / transformers {key[16:]} static batch",
                f"{served / value:.2f}x (rounds: "
                + ", ".join(f"{t:.0f}" for t in rounds[key])
                + " vs "
                + ", ".join(f"{t:.0f}" for t in rounds["inferd_openai"])
                + ")",
            )
            for key, value in medians.items()
            if key.startswith("hf_static_batch_")
        ),
        (f"TTFT over the API, {PREFIX_LEN}+{SUFFIX_LEN} tokens, cold", f"{ttft['cold_ms']:.0f} ms"),
        (
            f"TTFT over the API, {PREFIX_LEN}+{SUFFIX_LEN} tokens, prefix cached",
            f"{ttft['cached_ms']:.0f} ms ({ttft['cold_ms'] / ttft['cached_ms']:.1f}x shorter)",
        ),
    ]
    return "\n".join(["| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


if __name__ == "__main__":
    main()
