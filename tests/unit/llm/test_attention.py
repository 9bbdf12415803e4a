"""Paged attention against dense causal SDPA: GQA, several sequences, scattered blocks."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from inferd.llm.attention import (  # noqa: E402
    AttentionBatch,
    allocate_kv_cache,
    build_attention_batch,
    paged_attention,
    write_kv,
)
from inferd.llm.decode_cache import DecodeCache  # noqa: E402
from inferd.llm.scheduler import ScheduledSequence  # noqa: E402

BLOCK_SIZE = 4
NUM_BLOCKS = 64
HEAD_DIM = 8


class Contexts:
    """Per-sequence dense K/V histories mirrored into a paged cache with shuffled blocks."""

    def __init__(self, num_heads: int, num_kv_heads: int, seed: int = 0) -> None:
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.generator = torch.Generator().manual_seed(seed)
        self.free_blocks = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(self.free_blocks)
        self.kv_cache = allocate_kv_cache(1, NUM_BLOCKS, BLOCK_SIZE, num_kv_heads, HEAD_DIM)
        self.tables: dict[str, list[int]] = {}
        self.lengths: dict[str, int] = {}
        self.decode_cache = DecodeCache(self.kv_cache, max_bytes=1 << 30)

    def chunk(self, request_id: str, num_new: int) -> ScheduledSequence:
        table = self.tables.setdefault(request_id, [])
        start = self.lengths.get(request_id, 0)
        self.lengths[request_id] = start + num_new
        while len(table) * BLOCK_SIZE < start + num_new:
            table.append(self.free_blocks.pop())
        positions = tuple(range(start, start + num_new))
        slots = tuple(table[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in positions)
        return ScheduledSequence(request_id, (0,) * num_new, positions, slots, tuple(table), True)

    def random(self, num_tokens: int, num_heads: int) -> torch.Tensor:
        return torch.randn(num_tokens, num_heads, HEAD_DIM, generator=self.generator)


def dense_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_context: int
) -> torch.Tensor:
    """Causal attention of q [n, H, D] at positions num_context.. over k, v [ctx, H_kv, D]."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).transpose(0, 1)
    v = v.repeat_interleave(group, dim=1).transpose(0, 1)
    n, ctx = q.shape[0], k.shape[1]
    mask = torch.arange(ctx)[None, :] <= torch.arange(ctx - n, ctx)[:, None]
    return F.scaled_dot_product_attention(q.transpose(0, 1), k, v, attn_mask=mask).transpose(0, 1)


def run_step(
    contexts: Contexts,
    step: list[tuple[str, int]],
    history: dict[str, tuple[torch.Tensor, torch.Tensor]],
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor, AttentionBatch]:
    """One step of paged attention; returns (paged output, dense output, batch)."""
    chunks = [contexts.chunk(request_id, n) for request_id, n in step]
    total = sum(n for _, n in step)
    q = contexts.random(total, contexts.num_heads)
    k = contexts.random(total, contexts.num_kv_heads)
    v = contexts.random(total, contexts.num_kv_heads)
    dense = contexts.decode_cache if mode == "dense" else None
    batch = build_attention_batch(chunks, contexts.kv_cache, mode != "reference", dense)
    out = paged_attention(q, k, v, batch, 0)
    expected, start = [], 0
    for request_id, n in step:
        past_k, past_v = history.get(request_id, (k[:0], v[:0]))
        new_k = torch.cat([past_k, k[start : start + n]])
        new_v = torch.cat([past_v, v[start : start + n]])
        history[request_id] = (new_k, new_v)
        expected.append(dense_reference(q[start : start + n], new_k, new_v, len(past_k)))
        start += n
    return out, torch.cat(expected), batch


STEPS = [
    [("a", 7), ("b", 1), ("c", 12)],  # fresh prefills of different lengths (b: one token)
    [("a", 1), ("b", 5), ("c", 1)],  # decodes mixed with a chunk that has cached context
    [("a", 1), ("b", 1), ("c", 1)],  # decode only
    [("c", 3), ("a", 1)],
    [("b", 1), ("a", 1), ("c", 1)],
    [("d", 9), ("c", 1)],  # a and b leave the decode rows; d arrives
    [("d", 1), ("b", 1)],
    [("a", 1), ("b", 1), ("c", 1), ("d", 1)],
]


@pytest.mark.parametrize("mode", ["batched", "reference", "dense"])
@pytest.mark.parametrize(("num_heads", "num_kv_heads"), [(4, 4), (4, 2), (6, 1)])
def test_paged_attention_matches_dense_causal_attention(
    num_heads: int, num_kv_heads: int, mode: str
) -> None:
    contexts = Contexts(num_heads, num_kv_heads)
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for step in STEPS:
        out, expected, _ = run_step(contexts, step, history, mode)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_decode_rows_are_refilled_only_when_the_sequence_changed_under_them() -> None:
    contexts = Contexts(4, 2)
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    run_step(contexts, [("a", 7), ("b", 5)], history, "dense")
    for _ in range(3):
        run_step(contexts, [("a", 1), ("b", 1)], history, "dense")
    assert contexts.decode_cache.refills == 2  # one per sequence, then appends only
    run_step(contexts, [("a", 2), ("b", 1)], history, "dense")  # a's row goes stale
    out, expected, _ = run_step(contexts, [("a", 1), ("b", 1)], history, "dense")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert contexts.decode_cache.refills == 3


def test_decodes_fall_back_to_gathering_past_the_memory_bound() -> None:
    contexts = Contexts(4, 2)
    contexts.decode_cache.max_bytes = 1024
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for step in STEPS:
        out, expected, batch = run_step(contexts, step, history, "dense")
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert batch.decode is None or batch.decode.rows is None
    assert contexts.decode_cache.nbytes == 0


def test_block_tables_are_scattered_and_cross_blocks() -> None:
    contexts = Contexts(4, 2)
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for step in STEPS:
        run_step(contexts, step, history, "batched")
    table = contexts.tables["c"]
    assert len(table) >= 4
    assert table != sorted(table)


def test_batch_groups_decodes_and_prefills() -> None:
    contexts = Contexts(4, 2)
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    _, _, first = run_step(contexts, STEPS[0], history, "batched")
    assert first.decode is not None and first.decode.num_seqs == 1
    assert [(c.start, c.end, c.mask is None) for c in first.prefills] == [
        (0, 7, True),
        (8, 20, True),
    ]
    assert first.logits_indices.tolist() == [6, 7, 19]
    _, _, second = run_step(contexts, STEPS[1], history, "batched")
    assert [(c.start, c.end, c.mask is None) for c in second.prefills] == [(1, 6, False)]
    assert second.context_lens == (8, 6, 13)
    _, _, third = run_step(contexts, STEPS[2], history, "batched")
    assert third.decode is not None and third.decode.covers_batch and not third.prefills
    assert third.block_tables.shape == (3, 4)


def test_write_kv_stores_each_token_at_its_slot() -> None:
    cache = allocate_kv_cache(1, 4, BLOCK_SIZE, 2, HEAD_DIM)
    cache_k, cache_v = cache[0, 0], cache[0, 1]
    k, v = torch.randn(3, 2, HEAD_DIM), torch.randn(3, 2, HEAD_DIM)
    write_kv(cache_k, cache_v, k, v, torch.tensor([13, 2, 7]))
    torch.testing.assert_close(cache_k[3, 1], k[0])
    torch.testing.assert_close(cache_v[0, 2], v[1])
    torch.testing.assert_close(cache_k[1, 3], k[2])
    torch.testing.assert_close(cache_k.abs().sum(), k.abs().sum())  # nothing else written


def test_kv_cache_layout() -> None:
    cache = allocate_kv_cache(3, 10, BLOCK_SIZE, 2, HEAD_DIM, dtype=torch.bfloat16)
    assert cache.shape == (3, 2, 10, BLOCK_SIZE, 2, HEAD_DIM)
    assert cache.dtype == torch.bfloat16


def test_new_dense_rows_hold_no_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Masked columns are multiplied by zero weights: NaN garbage there would poison the row."""
    real_empty = torch.empty

    def nan_empty(*args: object, **kwargs: object) -> torch.Tensor:
        tensor: torch.Tensor = real_empty(*args, **kwargs)  # type: ignore[call-overload]
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    contexts = Contexts(4, 2)
    history: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    run_step(contexts, [("a", 7), ("b", 3)], history, "dense")
    monkeypatch.setattr(torch, "empty", nan_empty)
    out, expected, _ = run_step(contexts, [("a", 1), ("b", 1)], history, "dense")
    monkeypatch.undo()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
