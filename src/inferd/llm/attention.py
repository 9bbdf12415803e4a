"""Paged attention in plain PyTorch: write new K/V by slot, attend through block tables.

The KV cache is one tensor ``[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]``.
Seen per layer as ``[num_slots, num_kv_heads, head_dim]`` (slot = block_id * block_size +
offset), writing a step's new K/V is one ``index_copy_``; seen as ``[num_blocks, block_bytes]``,
reading a sequence's context is one ``index_select`` of whole blocks.

A step's tokens arrive flattened: each sequence contributes its new tokens, which attend
causally to the sequence's whole context (cached tokens, then the new ones). Sequences with
one new token (decodes) are attended together: their blocks are gathered into a padded
``[B, max_blocks * block_size, ...]`` buffer, reused by every layer, and one SDPA call with a
padding mask serves them all. Sequences with several new tokens (prefill chunks) are attended
one at a time; a chunk with no cached context skips the gather and uses ``is_causal``.

Models reach all this through ``attend(q, k, v, layer)``; the step's ``AttentionBatch`` is not
an argument of the model but the thread's current step (``step_context``), as in vLLM's
forward context. That keeps the batch, whose tuples change every step, out of what
``torch.compile`` traces: compiled, ``attend`` is one opaque custom op (``inferd::attention``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

from inferd.llm.decode_cache import DecodeCache, DecodeRows, LayerRows
from inferd.llm.kernels import DecodeKernel


class ChunkLike(Protocol):
    """One sequence's share of a step; ``scheduler.ScheduledSequence`` is one."""

    @property
    def request_id(self) -> str: ...

    @property
    def positions(self) -> tuple[int, ...]: ...

    @property
    def slot_mapping(self) -> tuple[int, ...]: ...

    @property
    def block_table(self) -> tuple[int, ...]: ...

    @property
    def samples(self) -> bool: ...


class LayerKV(NamedTuple):
    """One layer's cache: keys and values ``[num_blocks, block_size, H_kv, D]``.

    An int8 cache has ``scales``: the key and value scale of each token and head,
    ``[num_blocks, block_size, H_kv]`` each (``quantize_kv``).
    """

    keys: torch.Tensor
    values: torch.Tensor
    scales: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True, slots=True)
class DecodeGroup:
    """Sequences with exactly one new token, attended in one padded SDPA call."""

    token_indices: torch.Tensor
    """[B] row of each sequence's token in the flattened batch."""
    block_ids: torch.Tensor
    """[B * max_blocks] the block tables, padded with block 0 and flattened."""
    mask: torch.Tensor
    """[B, 1, 1, max_blocks * block_size] True where a key is inside the context."""
    key_buffer: torch.Tensor
    """[B * max_blocks, block_numel] workspace the gathered keys land in, shared by layers."""
    value_buffer: torch.Tensor
    covers_batch: bool
    """Whether these are all the batch's tokens, in order, so no row shuffling is needed."""
    rows: DecodeRows | None = None
    """Where the group's KV lives in the dense decode cache; None: gather from the blocks."""
    lens: torch.Tensor | None = None
    """[B] int64 context length of each row, in row order; set whenever ``rows`` is."""
    kernel: DecodeKernel | None = None
    """The native decode attention over the rows (``llm/kernels.py``; the runner chose it
    for the model's dtype and head size); None: SDPA with ``mask``."""

    @property
    def num_seqs(self) -> int:
        return self.token_indices.numel()


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """A sequence with several new tokens (rows ``start:end``), attended on its own."""

    start: int
    end: int
    context_slots: torch.Tensor | None
    """[context_len] slot of every context token; None when all of it is new this step."""
    mask: torch.Tensor | None
    """[num_new, context_len] causal mask offset by the cached tokens; None when fresh."""


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Everything attention needs about one step, built once and shared by every layer."""

    kv_cache: torch.Tensor
    """[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]."""
    slot_mapping: torch.Tensor
    """[num_tokens] cache slot each new token's K/V is written to."""
    query_lens: tuple[int, ...]
    context_lens: tuple[int, ...]
    """Per sequence: tokens of KV after this step (cached plus new)."""
    block_tables: torch.Tensor
    """[num_seqs, max_blocks] padded with 0, for kernels that read blocks themselves."""
    logits_indices: torch.Tensor
    """Rows whose logits the model computes: the last token of each sampling sequence."""
    decode: DecodeGroup | None
    prefills: tuple[PrefillChunk, ...]
    kv_scales: torch.Tensor | None = None
    """An int8 ``kv_cache``'s scales: [num_layers, 2, num_blocks, block_size, num_kv_heads]."""

    @property
    def num_tokens(self) -> int:
        return self.slot_mapping.numel()

    def layer_cache(self, layer_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The key and value cache of one layer, each ``[num_blocks, block_size, H_kv, D]``."""
        return self.kv_cache[layer_index, 0], self.kv_cache[layer_index, 1]

    def layer_kv(self, layer_index: int) -> LayerKV:
        """One layer's keys, values and (int8 cache) scales."""
        keys, values = self.layer_cache(layer_index)
        if self.kv_scales is None:
            return LayerKV(keys, values)
        scales = self.kv_scales[layer_index, 0], self.kv_scales[layer_index, 1]
        return LayerKV(keys, values, scales)


_STEP: ContextVar[AttentionBatch] = ContextVar("inferd_attention_step")


@contextmanager
def step_context(batch: AttentionBatch) -> Iterator[None]:
    """Make ``batch`` the step that ``attend`` reads in this thread, for the block's duration."""
    token = _STEP.set(batch)
    try:
        yield
    finally:
        _STEP.reset(token)


def current_step() -> AttentionBatch:
    """The batch of the step this thread is computing (``step_context``)."""
    try:
        return _STEP.get()
    except LookupError:
        raise RuntimeError(
            "attention ran outside a step: call the model inside step_context(batch)"
        ) from None


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, scale: float | None = None
) -> torch.Tensor:
    """The models' attention: ``paged_attention`` over the current step's batch.

    Under ``torch.compile`` it is the custom op ``inferd::attention``, which the compiler
    keeps as one call instead of tracing the batch's Python structure.
    """
    if torch.compiler.is_compiling():
        out: torch.Tensor = _attention_op(q, k, v, layer, scale)
        return out
    return paged_attention(q, k, v, current_step(), layer, scale)


@torch.library.custom_op("inferd::attention", mutates_args=())
def _attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, scale: float | None
) -> torch.Tensor:
    # Writes the step's K/V into the cache, which is no argument: no compiled graph reads
    # the cache, and each layer's call depends on the previous layer's output, so the
    # calls keep their order.
    return paged_attention(q, k, v, current_step(), layer, scale)


@_attention_op.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, scale: float | None
) -> torch.Tensor:
    return torch.empty_like(q)


def allocate_kv_cache(
    num_layers: int,
    num_blocks: int,
    block_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A zeroed KV cache in the layout ``AttentionBatch.kv_cache`` expects."""
    shape = (num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim)
    return torch.zeros(shape, dtype=dtype, device=device)


def allocate_kv_scales(kv_cache: torch.Tensor) -> torch.Tensor:
    """The fp32 scales an int8 ``kv_cache`` needs: one per token, head, and K or V."""
    return torch.zeros(kv_cache.shape[:-1], dtype=torch.float32, device=kv_cache.device)


def quantize_kv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K or V ``[..., D]`` -> (int8 ``[..., D]``, fp32 scale ``[...]``), symmetric per vector."""
    values = x.float()
    scale = values.abs().amax(dim=-1).div_(127).clamp_(min=torch.finfo(torch.float32).tiny)
    return (values / scale.unsqueeze(-1)).round_().to(torch.int8), scale


def dequantize_kv(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``quantize_kv`` undone, in ``dtype``."""
    return x.to(dtype) * scale.unsqueeze(-1).to(dtype)


def write_kv(
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slot_mapping: torch.Tensor,
    scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Store new ``k``/``v`` ([T, H_kv, D]) at their slots of a layer's cache.

    With ``scales`` (an int8 cache), each vector is quantized and its scale stored beside it.
    """
    num_kv_heads, head_dim = cache_k.shape[-2:]
    if scales is not None:
        (k, k_scale), (v, v_scale) = quantize_kv(k), quantize_kv(v)
        scales[0].view(-1, num_kv_heads).index_copy_(0, slot_mapping, k_scale)
        scales[1].view(-1, num_kv_heads).index_copy_(0, slot_mapping, v_scale)
    cache_k.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(cache_k.dtype))
    cache_v.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(cache_v.dtype))


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: AttentionBatch,
    layer: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Write layer ``layer``'s new K/V to the cache, then attend: q [T, H, D] -> [T, H, D]."""
    cache = batch.layer_kv(layer)
    write_kv(cache.keys, cache.values, k, v, batch.slot_mapping, cache.scales)
    group = batch.decode
    if group is not None and group.covers_batch:
        return _decodes(q, k, v, cache, group, layer, scale)
    out = torch.empty_like(q)
    if group is not None:
        rows = group.token_indices
        decoded = _decodes(q.index_select(0, rows), k, v, cache, group, layer, scale)
        out.index_copy_(0, rows, decoded)
    for chunk in batch.prefills:
        out[chunk.start : chunk.end] = _prefill_attention(q, k, v, cache, chunk, scale)
    return out


def _decodes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: LayerKV,
    group: DecodeGroup,
    layer: int,
    scale: float | None,
) -> torch.Tensor:
    """The decode group's attention, ``q`` its queries in group order: from the dense rows when
    the group has them (``k``/``v`` are the step's, to append), else gathered from the blocks."""
    if group.rows is None:
        return _decode_attention(q, cache, group, scale)
    tokens = None if group.covers_batch else group.token_indices
    k_new = k if tokens is None else k.index_select(0, tokens)
    v_new = v if tokens is None else v.index_select(0, tokens)
    return _dense_decode_attention(q, k_new, v_new, group, group.rows[layer], scale)


def _decode_attention(
    q: torch.Tensor, cache: LayerKV, group: DecodeGroup, scale: float | None
) -> torch.Tensor:
    cache_k, cache_v, _ = cache
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = cache_k.shape[-2]
    block_numel = cache_k[0].numel()
    # Gathering into a preallocated buffer matters on CPU: a fresh tensor this size would
    # page-fault on every layer and cost several times the copy itself.
    torch.index_select(cache_k.view(-1, block_numel), 0, group.block_ids, out=group.key_buffer)
    torch.index_select(cache_v.view(-1, block_numel), 0, group.block_ids, out=group.value_buffer)
    keys = group.key_buffer.view(num_seqs, -1, num_kv_heads, head_dim).transpose(1, 2)
    values = group.value_buffer.view(num_seqs, -1, num_kv_heads, head_dim).transpose(1, 2)
    if cache.scales is None:
        keys, values = keys.to(q.dtype), values.to(q.dtype)  # no-op unless the cache is narrower
    else:
        key_scales, value_scales = (
            s.view(s.shape[0], -1).index_select(0, group.block_ids).view(num_seqs, -1, num_kv_heads)
            for s in cache.scales
        )
        keys = dequantize_kv(keys, key_scales.transpose(1, 2), q.dtype)
        values = dequantize_kv(values, value_scales.transpose(1, 2), q.dtype)
    # GQA without repeating K/V: a KV head's query heads become its query "rows".
    queries = q.reshape(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=group.mask, scale=scale)
    return out.reshape(num_seqs, num_heads, head_dim)


def _dense_decode_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    group: DecodeGroup,
    rows: LayerRows,
    scale: float | None,
) -> torch.Tensor:
    """Append the new K/V ([B, H_kv, D], group order) to one layer's dense rows and attend.

    ``q`` [B, H, D] is in group order, and so is the result.
    """
    dense_k, dense_v = rows.keys, rows.values
    head_dim = dense_k.shape[-1]
    if group.kernel is not None and group.lens is not None:
        # The kernel appends the new K/V itself and reads q and writes out in group order.
        default = head_dim**-0.5  # SDPA's
        return group.kernel(
            q,
            k_new,
            v_new,
            dense_k,
            dense_v,
            group.lens,
            rows.order,
            default if scale is None else scale,
        )
    dense_k.view(-1, head_dim).index_copy_(
        0, rows.slots, k_new.reshape(-1, head_dim).to(dense_k.dtype)
    )
    dense_v.view(-1, head_dim).index_copy_(
        0, rows.slots, v_new.reshape(-1, head_dim).to(dense_v.dtype)
    )
    num_seqs, num_heads, _ = q.shape
    num_kv_heads = dense_k.shape[1]
    # Rows are in row order; the group's members are permuted into it and back.
    queries = q.index_select(0, rows.order)
    keys = dense_k[:num_seqs, :, : rows.length].to(q.dtype)  # no-op unless narrower
    values = dense_v[:num_seqs, :, : rows.length].to(q.dtype)
    queries = queries.reshape(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=group.mask, scale=scale)
    result = torch.empty_like(q)
    result.index_copy_(0, rows.order, out.reshape(num_seqs, num_heads, head_dim))
    return result


def _prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: LayerKV,
    chunk: PrefillChunk,
    scale: float | None,
) -> torch.Tensor:
    queries = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
    if chunk.context_slots is None:
        keys, values = k[chunk.start : chunk.end], v[chunk.start : chunk.end]
    else:
        keys, values = _read_slots(cache, chunk.context_slots, q.dtype)
    keys = keys.transpose(0, 1).unsqueeze(0)
    values = values.transpose(0, 1).unsqueeze(0)
    out = F.scaled_dot_product_attention(
        queries,
        keys.to(queries.dtype),
        values.to(queries.dtype),
        attn_mask=chunk.mask,
        is_causal=chunk.mask is None,
        scale=scale,
        enable_gqa=keys.shape[1] != queries.shape[1],
    )
    return out.squeeze(0).transpose(0, 1)


def _read_slots(
    cache: LayerKV, slots: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[len(slots), H_kv, D]`` at ``slots``, dequantized from an int8 cache."""
    num_kv_heads, head_dim = cache.keys.shape[-2:]
    keys = cache.keys.view(-1, num_kv_heads, head_dim).index_select(0, slots)
    values = cache.values.view(-1, num_kv_heads, head_dim).index_select(0, slots)
    if cache.scales is None:
        return keys, values
    key_scales, value_scales = (
        s.view(-1, num_kv_heads).index_select(0, slots) for s in cache.scales
    )
    return dequantize_kv(keys, key_scales, dtype), dequantize_kv(values, value_scales, dtype)


def build_attention_batch(
    chunks: Sequence[ChunkLike],
    kv_cache: torch.Tensor,
    batch_decodes: bool = True,
    decode_cache: DecodeCache | None = None,
    kv_scales: torch.Tensor | None = None,
    decode_kernel: DecodeKernel | None = None,
) -> AttentionBatch:
    """The step's attention metadata, on the cache's device.

    ``batch_decodes=False`` attends every sequence on its own: the slow reference path.
    With a ``decode_cache``, decodes read their KV from its dense rows instead of gathering.
    ``kv_scales`` (``allocate_kv_scales``) makes ``kv_cache`` an int8 cache.
    ``decode_kernel`` (``kernels.decode_attention_kernel``) attends the dense rows natively.
    """
    assert kv_scales is None or decode_cache is None, "int8 KV has no dense decode rows"
    device = kv_cache.device
    block_size = kv_cache.shape[3]
    query_lens = tuple(len(chunk.positions) for chunk in chunks)
    context_lens = tuple(chunk.positions[-1] + 1 for chunk in chunks)
    starts = _cumulative(query_lens)
    slot_mapping = [slot for chunk in chunks for slot in chunk.slot_mapping]
    sampled_rows = [starts[i + 1] - 1 for i, chunk in enumerate(chunks) if chunk.samples]
    is_decode = [batch_decodes and n == 1 for n in query_lens]
    decode_rows = [i for i, flag in enumerate(is_decode) if flag]
    decode = None
    if decode_rows:
        decode = _decode_group(chunks, decode_rows, starts, kv_cache, decode_cache, decode_kernel)
    prefills = tuple(
        _prefill_chunk(chunks[i], starts[i], block_size, device)
        for i in range(len(chunks))
        if not is_decode[i]
    )
    return AttentionBatch(
        kv_cache=kv_cache,
        slot_mapping=_long_tensor(slot_mapping, device),
        query_lens=query_lens,
        context_lens=context_lens,
        block_tables=_padded_block_tables([chunk.block_table for chunk in chunks], device),
        logits_indices=_long_tensor(sampled_rows, device),
        decode=decode,
        prefills=prefills,
        kv_scales=kv_scales,
    )


def _decode_group(
    chunks: Sequence[ChunkLike],
    indices: list[int],
    starts: list[int],
    kv_cache: torch.Tensor,
    decode_cache: DecodeCache | None,
    kernel: DecodeKernel | None = None,
) -> DecodeGroup:
    device = kv_cache.device
    block_size = kv_cache.shape[3]
    block_numel = kv_cache[0, 0, 0].numel()
    context_lens = [chunks[i].positions[-1] + 1 for i in indices]
    rows = None
    if decode_cache is not None:
        rows = decode_cache.prepare(
            [chunks[i].request_id for i in indices],
            context_lens,
            [chunks[i].block_table for i in indices],
        )
    if rows is not None:
        # The mask follows the rows' order, which is the order SDPA sees the sequences in.
        lens = _long_tensor(context_lens, device).index_select(0, rows.order)
        key_positions = torch.arange(rows.length, device=device)
        empty = torch.empty(0, dtype=kv_cache.dtype, device=device)
        return DecodeGroup(
            token_indices=_long_tensor([starts[i] for i in indices], device),
            block_ids=torch.empty(0, dtype=torch.long, device=device),
            mask=(key_positions[None, :] < lens[:, None]).view(len(indices), 1, 1, -1),
            key_buffer=empty,
            value_buffer=empty,
            covers_batch=len(indices) == len(chunks),
            rows=rows,
            lens=lens,
            kernel=kernel,
        )
    max_blocks = -(-max(context_lens) // block_size)
    tables = [chunks[i].block_table[:max_blocks] for i in indices]
    block_ids = _padded_block_tables(tables, device, max_blocks).view(-1)
    key_positions = torch.arange(max_blocks * block_size, device=device)
    lens = _long_tensor(context_lens, device)
    mask = (key_positions[None, :] < lens[:, None]).view(len(indices), 1, 1, -1)
    buffer_shape = (len(indices) * max_blocks, block_numel)
    return DecodeGroup(
        token_indices=_long_tensor([starts[i] for i in indices], device),
        block_ids=block_ids,
        mask=mask,
        key_buffer=torch.empty(buffer_shape, dtype=kv_cache.dtype, device=device),
        value_buffer=torch.empty(buffer_shape, dtype=kv_cache.dtype, device=device),
        covers_batch=len(indices) == len(chunks),
    )


def _prefill_chunk(
    chunk: ChunkLike, start: int, block_size: int, device: torch.device
) -> PrefillChunk:
    num_new = len(chunk.positions)
    context_len = chunk.positions[-1] + 1
    end = start + num_new
    if context_len == num_new:
        return PrefillChunk(start, end, None, None)
    positions = torch.arange(context_len, device=device)
    table = _long_tensor(list(chunk.block_table), device)
    slots = table[positions // block_size] * block_size + positions % block_size
    query_positions = positions[context_len - num_new :]
    mask = positions[None, :] <= query_positions[:, None]
    return PrefillChunk(start, end, slots, mask)


def _padded_block_tables(
    tables: Sequence[Sequence[int]], device: torch.device, width: int | None = None
) -> torch.Tensor:
    width = max((len(table) for table in tables), default=0) if width is None else width
    rows = [[*table, *([0] * (width - len(table)))] for table in tables]
    return torch.tensor(rows, dtype=torch.long, device=device).view(len(tables), width)


def _cumulative(lengths: Sequence[int]) -> list[int]:
    starts = [0]
    for length in lengths:
        starts.append(starts[-1] + length)
    return starts


def _long_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
