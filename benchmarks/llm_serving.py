"""Issue 4's figures over HTTP: ``inferd serve`` behind the OpenAI API against transformers.

    .venv/bin/python -m benchmarks.llm_serving [--requests 32] [--rounds 3] [--threads 2]
                                               [--dtype float32|bfloat16] [--whole] [--raw]
                                               [--compile]

The model is ``benchmarks.llm_engine``'s (Llama, hidden 512, 8 layers, 8 heads, intermediate
1536, vocab 32000, random weights saved in fp32), with a 32,000-token word-level tokenizer so
that the server detokenizes every output token as it would for a real checkpoint. The server
and transformers take turns on the same cores; each round measures, back to back,
(a) transformers ``generate`` one request at a time, (b) transformers on a static batch of all
requests (left padded), (c) the same requests sent at once to ``inferd serve`` through the
official ``openai`` client (token-id prompts of 128 tokens, 128 output tokens each, streamed);
``--whole`` adds the requests not streamed, ``--raw`` streamed through ``inferd bench``'s own
lean HTTP client instead of the ``openai`` one (as vLLM's benchmark_serving uses aiohttp, not
the SDK): here the load generator's CPU is taken from the server's two cores; ratios are
taken within each round, and their median reported. transformers runs in fp32 (what it loads
this checkpoint as) and, with ``--dtype bfloat16``, in bf16 too. ``--compile`` serves with
``[llm] compile = true`` and streams each round's requests through the lean client to a second,
eager server as well, so compiled and eager compare within the round. Then
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
import orjson
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
from inferd.bench.connection import Connection, Endpoint
from inferd.bench.llm_stream import SseTracker
from inferd.bench.protocols import JSON_HEADERS

MODEL = "bench_llama"
NO_EOS = {"ignore_eos": True}  # random weights: every request generates all its tokens


def write_tokenizer(folder: Path) -> None:
    vocab = {f"w{i}": i for i in range(MODEL_SHAPE["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text('{"eos_token": "w2", "bos_token": "w1"}')


def start_server(
    folder: Path, threads: int, num_seqs: int, dtype: str, compile: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    tokens = num_seqs * (PROMPT_LEN + NEW_TOKENS) + 4 * 1100
    kv_mb = 2 * 8 * 512 * element * tokens // (1 << 20) + 16
    (folder / "model.toml").write_text(
        f'name = "{MODEL}"\nbackend = "llm"\nthreads = {threads}\n\n'
        f'[llm]\ndtype = "{dtype}"\nkv_cache_mb = {kv_mb}\nmax_num_seqs = {max(num_seqs, 64)}\n'
        f"compile = {str(compile).lower()}\n"
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
    deadline = time.monotonic() + 300  # compile = true compiles before it is ready
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


async def whole_request(
    client: openai.AsyncOpenAI, prompt: list[int], max_tokens: int
) -> tuple[float, int]:
    """One completion, not streamed; (seconds to the answer, output tokens)."""
    started = time.perf_counter()
    answer = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=NO_EOS
    )
    assert answer.usage is not None
    return time.perf_counter() - started, answer.usage.completion_tokens


async def raw_request(endpoint: Endpoint, prompt: list[int], max_tokens: int) -> tuple[float, int]:
    """Stream one completion through ``inferd bench``'s own HTTP/1.1 client and SSE reader
    (a prebuilt request, the events split and parsed with orjson, no framework), as vLLM's
    benchmark_serving reads streams; (seconds to the first token, output tokens)."""
    body = {
        "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}, **NO_EOS,
    }  # fmt: skip
    request = endpoint.request("POST", "/v1/completions", orjson.dumps(body), JSON_HEADERS)
    connection = await Connection.open(endpoint)
    try:
        started = time.monotonic()
        tracker = SseTracker()
        response = await connection.exchange(request, tracker)
    finally:
        connection.close()
    assert response.status == 200 and tracker.outcome() is None, (response.status, tracker.error)
    # chunk_times are time.monotonic() instants (bench/connection.py).
    return tracker.chunk_times[0] - started, tracker.output_tokens


async def served_throughput(
    url: str, prompts: list[list[int]], stream: bool = True, raw: bool = False
) -> dict[str, float]:
    """The requests sent at once, streamed or not: output tokens/s, and the median time to the
    first token (streamed) or to the whole answer. ``raw``: streamed through ``inferd bench``'s
    lean client instead of the ``openai`` one, whose parsing of every chunk takes CPU from the
    server."""
    if raw:
        endpoint = Endpoint.from_url(url)
        started = time.perf_counter()
        results = await asyncio.gather(*(raw_request(endpoint, p, NEW_TOKENS) for p in prompts))
        seconds = time.perf_counter() - started
    else:
        send = one_request if stream else whole_request
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(send(client, p, NEW_TOKENS) for p in prompts))
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


def compare(
    models: dict[str, Any], url: str, args: argparse.Namespace, eager_url: str | None = None
) -> dict[str, Any]:
    """Rounds of (a), (b) and (c) back to back, each round's ratios taken within the round:
    the machine's speed drifts by 1.5x over minutes, so figures from different moments do
    not compare. ``models`` holds transformers' model in each reference precision; the served
    model computes in ``args.dtype``, which is one of them. ``eager_url``: a second server,
    not compiled, streamed through the lean client too (``--compile``).
    """
    for served in (url, eager_url):
        if served is not None:
            asyncio.run(served_throughput(served, random_prompts(4, 16, 9)))  # warm-up
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        # Fresh prompts each round, or the server's prefix cache would skip their prefill.
        prompts = random_prompts(args.requests, PROMPT_LEN, seed=1 + index)
        sequential = random_prompts(args.sequential, PROMPT_LEN, seed=100 + index)
        figures: dict[str, float] = {}
        for dtype, model in models.items():
            figures[f"hf_sequential_{dtype}"] = hf_sequential(model, sequential)["tokens_per_s"]
            figures[f"hf_static_batch_{dtype}"] = hf_generate(model, prompts)["tokens_per_s"]
        figures["inferd_openai"] = asyncio.run(served_throughput(url, prompts))["tokens_per_s"]
        if args.raw:
            again = random_prompts(args.requests, PROMPT_LEN, seed=300 + index)
            raw = asyncio.run(served_throughput(url, again, raw=True))
            figures["inferd_http_streamed"] = raw["tokens_per_s"]
        if eager_url is not None:
            again = random_prompts(args.requests, PROMPT_LEN, seed=400 + index)
            eager = asyncio.run(served_throughput(eager_url, again, raw=True))
            figures["inferd_eager_http_streamed"] = eager["tokens_per_s"]
        if args.whole:
            again = random_prompts(args.requests, PROMPT_LEN, seed=200 + index)
            whole = asyncio.run(served_throughput(url, again, stream=False))
            figures["inferd_openai_not_streamed"] = whole["tokens_per_s"]
        print("round", index + 1, {k: round(v, 1) for k, v in figures.items()}, flush=True)
        rounds.append(figures)
    ratios = {
        f"{ours} / {key}": statistics.median(r[ours] / r[key] for r in rounds)
        for ours in rounds[0]
        if ours.startswith("inferd")
        for key in rounds[0]
        if not key.startswith("inferd")
    }
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {"rounds": rounds, "median_tokens_per_s": medians, "median_ratio": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument(
        "--sequential", type=int, default=2, help="requests timed one by one, each round"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--whole", action="store_true", help="also send the requests not streamed, each round"
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="also stream the requests through inferd bench's lean client, each round",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the served model's precision; transformers runs in it too (and in float32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="serve with [llm] compile = true, and measure a second, eager server beside it",
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
        proc, url = start_server(folder, args.threads, args.requests, args.dtype, args.compile)
        procs, eager_url = [proc], None
        try:
            if args.compile:
                eager, eager_url = start_server(folder, args.threads, args.requests, args.dtype)
                procs.append(eager)
            results = compare(models, url, args, eager_url)
            results["prefix_ttft"] = asyncio.run(served_prefix_ttft(url))
            results["metrics"] = kv_metrics(url)
        finally:
            for running in procs:
                running.terminate()
                running.wait(30)
    results["setup"] = {**vars(args), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS}
    print(render(results))
    name = "llm_serving" if args.dtype == "float32" else f"llm_serving_{args.dtype}"
    name += "_compiled" if args.compile else ""
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
    medians, ratios = results["median_tokens_per_s"], results["median_ratio"]
    ttft, num = results["prefix_ttft"], int(results["setup"]["requests"])
    dtype, rounds = results["setup"]["dtype"], results["rounds"]
    rows = []
    for key, value in medians.items():
        per_round = ", ".join(f"{r[key]:.0f}" for r in rounds)
        label = key.replace("_", " ").replace("hf", "transformers", 1)
        rows.append((f"{label}, tok/s (median; rounds)", f"{value:.1f} ({per_round})"))
    for key, ratio in ratios.items():
        label = key.replace("_", " ").replace("hf", "transformers", 1)
        rows.append((f"{label} (served in {dtype}), median of the rounds' ratios", f"{ratio:.2f}x"))
    rows += [
        (f"TTFT over the API, {PREFIX_LEN}+{SUFFIX_LEN} tokens, cold", f"{ttft['cold_ms']:.0f} ms"),
        (
            f"TTFT over the API, {PREFIX_LEN}+{SUFFIX_LEN} tokens, prefix cached",
            f"{ttft['cached_ms']:.0f} ms ({ttft['cold_ms'] / ttft['cached_ms']:.1f}x shorter)",
        ),
    ]
    table = [f"| {a} | {b} |" for a, b in rows]
    return "\n".join([f"{num} requests", "| measure | value |", "| --- | --- |", *table])


if __name__ == "__main__":
    main()
