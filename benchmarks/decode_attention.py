"""The native decode attention (``llm/kernels.py``) against SDPA, on K/V that comes from DRAM.

    .venv/bin/python -m benchmarks.decode_attention [--rounds 30] [--dtype float32|bfloat16]

The shapes are issue 4's benchmark model in the middle of its run: 8 layers, 32 decoding
sequences of 180-199 tokens, 8 heads of 64 (no GQA), dense K/V rows of 256 columns (the
engine's ``decode_cache`` layout). One "step" attends all 8 layers in turn, as a decode step
does, so that each layer's K/V (25 MB in fp32) was evicted since its last use, as it is in the
engine. Each round times a step of each contender back to back; reported are the median step
of each, the median of the per-round ratios to SDPA, and the rate at which each reads K/V,
beside a plain sum over the same rows (what the memory gives). Both contenders do what a layer
of the engine does with them: append the step's K/V and attend, with the cache's rows in
another order than the step's sequences (the SDPA path: two ``index_copy_`` appends, the
queries permuted into row order and the result back, as ``attention._dense_decode_attention``
does without the kernel).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import save
from inferd.llm.kernels import decode_attention_kernel

LAYERS, SEQS, HEADS, COLUMNS, HEAD_DIM = 8, 32, 8, 256, 64
SCALE = HEAD_DIM**-0.5


def contenders(
    cache: torch.Tensor, q: torch.Tensor, lens: torch.Tensor, order: torch.Tensor
) -> dict[str, Callable[[], None]]:
    """Each contender appends and attends (or reads) all layers once."""
    kernel = decode_attention_kernel()
    length = int(lens.max())
    mask = (torch.arange(length)[None, :] < lens[:, None]).view(SEQS, 1, 1, length)
    new = torch.randn(2, SEQS, HEADS, HEAD_DIM).to(cache.dtype)  # the step's K and V
    row_of = torch.empty_like(order)
    row_of[order] = torch.arange(SEQS)
    columns = (lens[row_of] - 1)[:, None]
    slots = ((row_of[:, None] * HEADS + torch.arange(HEADS)[None, :]) * COLUMNS + columns).view(-1)

    def sdpa() -> None:
        for layer in range(LAYERS):
            for which in (0, 1):
                rows = cache[layer, which].view(-1, HEAD_DIM)
                rows.index_copy_(0, slots, new[which].reshape(-1, HEAD_DIM))
            keys, values = cache[layer, 0, :, :, :length], cache[layer, 1, :, :, :length]
            queries = q.index_select(0, order).view(SEQS, HEADS, 1, HEAD_DIM)
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=SCALE)
            torch.empty_like(q).index_copy_(0, order, out.view(SEQS, HEADS, HEAD_DIM))

    def native() -> None:
        for layer in range(LAYERS):
            kernel(q, new[0], new[1], cache[layer, 0], cache[layer, 1], lens, order, SCALE)

    # The same bytes read as fp32 words: torch's bf16 sum is too slow to show the memory's rate.
    words = cache.view(torch.float32)

    def plain_sum() -> None:
        for layer in range(LAYERS):
            words[layer, :, :, :, :length].sum()

    return {"sdpa": sdpa, "native": native, "plain_sum": plain_sum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)
    cache = torch.randn(LAYERS, 2, SEQS, HEADS, COLUMNS, HEAD_DIM, generator=generator).to(dtype)
    q = torch.randn(SEQS, HEADS, HEAD_DIM, generator=generator).to(dtype)
    lens = torch.randint(180, 200, (SEQS,), generator=generator)  # in the rows' order
    order = torch.randperm(SEQS, generator=generator)  # row r holds sequence order[r]
    runs = contenders(cache, q, lens, order)
    for run in runs.values():
        run()  # builds the kernel, warms the allocator
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    kv_bytes = 2 * LAYERS * HEAD_DIM * HEADS * int(lens.sum()) * cache.element_size()
    results: dict[str, Any] = {"setup": {**vars(args), "kv_bytes_per_step": kv_bytes}}
    for name, times in seconds.items():
        step = statistics.median(times)
        ratio = statistics.median(s / t for s, t in zip(seconds["sdpa"], times, strict=True))
        results[name] = {"step_ms": step * 1e3, "gb_per_s": kv_bytes / step / 1e9, "vs_sdpa": ratio}
        print(
            f"{name:>9}: {step * 1e3:6.2f} ms a step of {LAYERS} layers, "
            f"{kv_bytes / step / 1e9:5.1f} GB/s, {ratio:.2f}x SDPA (median of per-round ratios)"
        )
    print(f"saved {save(f'decode_attention_{args.dtype}', results)}")


if __name__ == "__main__":
    main()
