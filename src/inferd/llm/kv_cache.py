"""Paged KV cache bookkeeping: which blocks hold which tokens, shared by prefix (pure).

The runner owns the KV tensors; this module only decides which block ids a sequence's tokens
go to. A block is identified, once it is full of computed tokens, by a hash chain over its
tokens and all the tokens before it, so two sequences with the same prefix can share blocks.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from collections.abc import Sequence as SequenceOf

from inferd.llm.sequence import BlockHash, Sequence


def hash_block_tokens(parent: BlockHash | None, token_ids: SequenceOf[int]) -> BlockHash:
    """The hash of a full block: sha256 over the parent block's hash and this block's tokens.

    A cryptographic hash because a collision would silently serve another prompt's KV, and a
    stable one so that hashes mean the same thing in every process.
    """
    digest = hashlib.sha256(parent or b"")
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return digest.digest()


def num_blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``num_tokens`` tokens."""
    return -(-num_tokens // block_size)


class BlockPool:
    """A fixed set of KV blocks with ref counts and a prefix cache of full blocks.

    A block with ref count 0 is free. A free block that was never cached (or whose cache entry
    is gone) sits in the free list; a free block that still holds a cached prefix sits in the
    evictable LRU and keeps its hash, so a later sequence with that prefix can take it back.
    Allocation prefers never-cached blocks and evicts least recently freed ones only after.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_evictions = 0
        self._ref_counts = [0] * num_blocks
        self._hashes: list[BlockHash | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recently freed first
        self._cached: dict[BlockHash, int] = {}

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation may take: never-cached ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_evictable_blocks(self) -> int:
        return len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def block_hash(self, block_id: int) -> BlockHash | None:
        return self._hashes[block_id]

    def evictable_block_ids(self) -> list[int]:
        """Evictable blocks, next to be evicted first."""
        return list(self._evictable)

    def lookup(self, block_hash: BlockHash) -> int | None:
        """The block caching this hash, if any."""
        return self._cached.get(block_hash)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take ``num_blocks`` free blocks, each with ref count 1."""
        if num_blocks > self.num_free_blocks:
            raise ValueError(f"asked for {num_blocks} blocks, {self.num_free_blocks} are free")
        block_ids = [self._take_free_block() for _ in range(num_blocks)]
        for block_id in block_ids:
            self._ref_counts[block_id] = 1
        return block_ids

    def touch(self, block_ids: Iterable[int]) -> None:
        """Take one more reference on cached blocks, reviving evictable ones."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                del self._evictable[block_id]
            self._ref_counts[block_id] += 1

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference on each block; blocks left unreferenced become free."""
        for block_id in block_ids:
            if self._ref_counts[block_id] <= 0:
                raise ValueError(f"block {block_id} freed more often than allocated")
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._release(block_id)

    def cache(self, block_id: int, block_hash: BlockHash) -> bool:
        """Register a full in-use block under its hash; False if another block has it already."""
        if block_hash in self._cached or self._hashes[block_id] is not None:
            return False
        self._hashes[block_id] = block_hash
        self._cached[block_hash] = block_id
        return True

    def _release(self, block_id: int) -> None:
        if self._hashes[block_id] is None:
            self._free.append(block_id)
        else:
            self._evictable[block_id] = None

    def _take_free_block(self) -> int:
        if self._free:
            return self._free.popleft()
        block_id, _ = self._evictable.popitem(last=False)
        evicted_hash = self._hashes[block_id]
        assert evicted_hash is not None, "only cached blocks are evictable"
        del self._cached[evicted_hash]
        self._hashes[block_id] = None
        self.num_evictions += 1
        return block_id


class KVCacheManager:
    """Gives sequences KV blocks for their tokens and shares full blocks by prefix hash."""

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_cache_queries = 0
        """Tokens of admitted sequences looked up in the prefix cache."""
        self.prefix_cache_hits = 0
        """Of those, tokens the cache supplied."""
        self._holders: dict[str, Sequence] = {}
        self._num_registered_blocks: dict[str, int] = {}

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_token_slots(self) -> int:
        """Tokens the whole cache can hold."""
        return self.pool.num_blocks * self.block_size

    def usage(self) -> float:
        """Fraction of blocks held by sequences."""
        return self.pool.num_used_blocks / self.pool.num_blocks

    @property
    def num_tokens_stored(self) -> int:
        """Computed tokens in blocks held by sequences, a shared block counted once."""
        filled: dict[int, int] = {}
        for seq in self._holders.values():
            for index, block_id in enumerate(seq.block_table):
                in_block = min(self.block_size, seq.num_computed_tokens - index * self.block_size)
                filled[block_id] = max(filled.get(block_id, 0), in_block)
        return sum(filled.values())

    def token_usage(self) -> float:
        """Fraction of the cache's token slots holding real tokens (usage minus fragmentation)."""
        return self.num_tokens_stored / self.num_token_slots

    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        """The longest cached run of full blocks starting the sequence, and its token count.

        Stops one token short of the known tokens: the model must compute at least the last
        token to produce the logits the next sample comes from.
        """
        if not self.enable_prefix_caching:
            return [], 0
        max_blocks = (seq.num_tokens - 1) // self.block_size
        self._extend_block_hashes(seq)
        blocks: list[int] = []
        for block_hash in seq.block_hashes[:max_blocks]:
            block_id = self.pool.lookup(block_hash)
            if block_id is None:
                break
            blocks.append(block_id)
        return blocks, len(blocks) * self.block_size

    def allocate(
        self, seq: Sequence, num_new_tokens: int, computed_blocks: SequenceOf[int] = ()
    ) -> bool:
        """Give ``seq`` slots for its next ``num_new_tokens`` tokens, all or nothing.

        ``computed_blocks`` (from ``get_computed_blocks``, for a sequence holding no blocks)
        become the start of its block table and count as computed tokens. False, with nothing
        changed, when the free blocks are too few.
        """
        num_computed = seq.num_computed_tokens + len(computed_blocks) * self.block_size
        num_needed = num_blocks_for(num_computed + num_new_tokens, self.block_size)
        num_new_blocks = num_needed - len(seq.block_table) - len(computed_blocks)
        # Reviving an evictable hit uses up a free block just as a fresh allocation does.
        num_revived = sum(1 for block_id in computed_blocks if self.pool.ref_count(block_id) == 0)
        if num_new_blocks + num_revived > self.pool.num_free_blocks:
            return False
        if seq.request_id not in self._holders:
            self._admit(seq, computed_blocks)
        self.pool.touch(computed_blocks)
        seq.block_table.extend(computed_blocks)
        seq.block_table.extend(self.pool.allocate(max(0, num_new_blocks)))
        seq.num_computed_tokens = num_computed
        return True

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks that became full of computed tokens, so others can share them."""
        if not self.enable_prefix_caching or seq.request_id not in self._holders:
            return
        num_full = seq.num_computed_tokens // self.block_size
        self._extend_block_hashes(seq)
        registered = self._num_registered_blocks[seq.request_id]
        for index in range(registered, num_full):
            self.pool.cache(seq.block_table[index], seq.block_hashes[index])
        self._num_registered_blocks[seq.request_id] = max(registered, num_full)

    def free(self, seq: Sequence) -> None:
        """Return the sequence's blocks; cached ones stay findable until evicted."""
        # Tail first: the LRU then evicts a sequence's last blocks before its prefix, which
        # other requests are the likelier to share.
        self.pool.free(reversed(seq.block_table))
        seq.block_table.clear()
        self._holders.pop(seq.request_id, None)
        self._num_registered_blocks.pop(seq.request_id, None)

    def slot_mapping(self, seq: Sequence, start: int, end: int) -> tuple[int, ...]:
        """Cache slot (block_id * block_size + offset) of each token position in [start, end)."""
        size = self.block_size
        table = seq.block_table
        return tuple(table[pos // size] * size + pos % size for pos in range(start, end))

    def _admit(self, seq: Sequence, computed_blocks: SequenceOf[int]) -> None:
        self._holders[seq.request_id] = seq
        self._num_registered_blocks[seq.request_id] = len(computed_blocks)
        seq.num_prefix_hit_tokens = len(computed_blocks) * self.block_size
        if self.enable_prefix_caching:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += seq.num_prefix_hit_tokens

    def _extend_block_hashes(self, seq: Sequence) -> None:
        hashes = seq.block_hashes
        size = self.block_size
        for index in range(len(hashes), seq.num_tokens // size):
            parent = hashes[-1] if hashes else None
            hashes.append(
                hash_block_tokens(parent, seq.token_ids[index * size : (index + 1) * size])
            )
