"""A dense copy of the decoding sequences' KV, kept across steps, so decodes need no gather.

Paged attention in plain PyTorch must gather each decoding sequence's blocks into a padded
buffer before SDPA, every layer of every step: on CPU that copy was a quarter of a decode
step. Between two steps the running batch rarely changes, so this cache keeps each decoding
sequence's K/V in a row of a dense ``[layers, 2, rows, kv_heads, capacity, head_dim]`` tensor:
a step appends one token per row and per layer, and SDPA reads the rows in place.

The paged cache stays the source of truth (prefix sharing, preemption, block accounting): a
row is (re)filled from it whenever its sequence is new to the cache, or its row does not hold
exactly the tokens before the new one (after a preemption, say). Rows of sequences that left
are reused by moving the last row into the hole, so rows ``0..B-1`` are the B decodes of the
step. The dense copy costs memory on top of the paged cache; ``max_bytes`` bounds it, and a
step that would not fit falls back to the gather path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class LayerRows:
    """One layer's dense rows for one step: where to append, what to read."""

    keys: torch.Tensor
    """``[rows, kv_heads, capacity, head_dim]``; ``values`` likewise."""
    values: torch.Tensor
    order: torch.Tensor
    """[B] the decode group's members in row order (indices into the group)."""
    slots: torch.Tensor
    """[B * kv_heads] where each member's new K (or V) lands in ``keys`` seen as
    ``[rows * kv_heads * capacity, head_dim]``."""
    length: int
    """Columns SDPA reads: the longest context among the rows."""


@dataclass(frozen=True, slots=True)
class DecodeRows:
    """Where one step's decodes live in the dense cache."""

    cache: torch.Tensor
    """The dense cache ``[layers, 2, rows, kv_heads, capacity, head_dim]``."""
    order: torch.Tensor
    """[B] the decode group's members in row order (indices into the group)."""
    slots: torch.Tensor
    """[B * kv_heads] where each member's new K (or V) lands in one layer's cache seen as
    ``[rows * kv_heads * capacity, head_dim]``: an ``index_copy_``, far cheaper than
    advanced-index assignment into the 4-d tensor."""
    length: int
    """Columns SDPA reads: the longest context among the rows."""

    def __getitem__(self, layer: int) -> LayerRows:
        cache = self.cache[layer]
        return LayerRows(cache[0], cache[1], self.order, self.slots, self.length)


class DecodeCache:
    """Dense per-sequence KV rows for the decode group, maintained across steps."""

    def __init__(self, kv_cache: torch.Tensor, max_bytes: int) -> None:
        self._paged = kv_cache
        self.max_bytes = max_bytes
        num_layers, _, _, block_size, num_kv_heads, head_dim = kv_cache.shape
        self._block_size = block_size
        self._shape = (num_layers, 2, num_kv_heads, head_dim)
        self._dense = torch.empty(0, dtype=kv_cache.dtype, device=kv_cache.device)
        self._row_of: dict[str, int] = {}
        self._ids: list[str] = []  # request id of each row
        self._lens: list[int] = []  # tokens each row holds
        self.refills = 0
        """Rows (re)built from the paged cache: once per sequence, plus once per preemption."""

    @property
    def nbytes(self) -> int:
        return self._dense.numel() * self._dense.element_size()

    def prepare(
        self,
        request_ids: Sequence[str],
        context_lens: Sequence[int],
        block_tables: Sequence[Sequence[int]],
    ) -> DecodeRows | None:
        """Rows for this step's decodes (their new token is at ``context_len - 1``).

        None when the rows would exceed ``max_bytes``: the caller gathers instead.
        """
        if not self._fits(len(request_ids), max(context_lens)):
            self.clear()
            return None
        self._evict(set(request_ids))
        self._ensure_capacity(len(request_ids), max(context_lens))
        rows = []
        for request_id, context_len, table in zip(
            request_ids, context_lens, block_tables, strict=True
        ):
            row = self._row_of.get(request_id)
            if row is None:
                row = self._new_row(request_id)
            if self._lens[row] != context_len - 1:
                self._refill(row, context_len - 1, table)
            self._lens[row] = context_len  # the new token is written by attention, per layer
            rows.append(row)
        device = self._dense.device
        rows_t = torch.tensor(rows, device=device)
        positions = torch.tensor([n - 1 for n in context_lens], device=device)
        _, _, _, heads, capacity, _ = self._dense.shape
        heads_t = torch.arange(heads, device=device)
        slots = (rows_t[:, None] * heads + heads_t[None, :]) * capacity + positions[:, None]
        return DecodeRows(
            cache=self._dense,
            order=torch.tensor(sorted(range(len(rows)), key=rows.__getitem__), device=device),
            slots=slots.view(-1),
            length=max(context_lens),
        )

    def clear(self) -> None:
        """Forget every row (the memory is kept for reuse)."""
        self._row_of.clear()
        self._ids.clear()
        self._lens.clear()

    # --- rows ---------------------------------------------------------------------------------

    def _fits(self, num_rows: int, length: int) -> bool:
        layers, two, heads, dim = self._shape
        element = self._paged.element_size()
        return layers * two * heads * dim * num_rows * _capacity(length) * element <= self.max_bytes

    def _evict(self, keep: set[str]) -> None:
        """Drop rows of sequences not decoding this step, moving the last rows into the holes."""
        for request_id in [rid for rid in self._ids if rid not in keep]:
            row = self._row_of.pop(request_id)
            last = len(self._ids) - 1
            if row != last:
                self._dense[:, :, row].copy_(self._dense[:, :, last])
                moved = self._ids[last]
                self._ids[row], self._lens[row] = moved, self._lens[last]
                self._row_of[moved] = row
            self._ids.pop()
            self._lens.pop()

    def _new_row(self, request_id: str) -> int:
        row = len(self._ids)
        self._ids.append(request_id)
        self._lens.append(-1)
        self._row_of[request_id] = row
        return row

    def _refill(self, row: int, num_tokens: int, table: Sequence[int]) -> None:
        """Copy a sequence's first ``num_tokens`` tokens of KV from the paged cache."""
        self.refills += 1
        if num_tokens == 0:
            return
        num_blocks = -(-num_tokens // self._block_size)
        blocks = torch.tensor(table[:num_blocks], device=self._paged.device)
        # [layers, 2, blocks, block_size, heads, dim] -> [layers, 2, heads, tokens, dim]
        kv = self._paged.index_select(2, blocks).flatten(2, 3)[:, :, :num_tokens]
        self._dense[:, :, row, :, :num_tokens].copy_(kv.transpose(2, 3))

    def _ensure_capacity(self, num_rows: int, length: int) -> None:
        layers, two, heads, dim = self._shape
        if self._dense.numel():
            _, _, rows, _, capacity, _ = self._dense.shape
            if rows >= num_rows and capacity >= length:
                return
        else:
            rows, capacity = 0, 0
        # Zeroed, not empty: SDPA reads the masked columns too, and a NaN left in freed memory
        # there turns a whole row's output into NaN (0 * NaN), whatever the mask says.
        grown = torch.zeros(
            (layers, two, max(num_rows, rows, 8), heads, max(_capacity(length), capacity), dim),
            dtype=self._paged.dtype,
            device=self._paged.device,
        )
        if self._ids:
            held = len(self._ids)
            width = min(capacity, grown.shape[4])
            grown[:, :, :held, :, :width].copy_(self._dense[:, :, :held, :, :width])
        self._dense = grown


def _capacity(length: int) -> int:
    """Columns to allocate for ``length`` tokens: the next power of two, at least 64."""
    return max(64, 1 << (length - 1).bit_length())
