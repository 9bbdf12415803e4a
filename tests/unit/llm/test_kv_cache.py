"""BlockPool and KVCacheManager: allocation, ref counts, prefix sharing, LRU eviction."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from inferd.llm.kv_cache import BlockPool, KVCacheManager, hash_block_tokens, num_blocks_for
from inferd.llm.sequence import Sequence
from inferd.llm.testing import check_block_invariants, make_sequence


def compute(kv: KVCacheManager, seq: Sequence, num_tokens: int) -> bool:
    """Allocate and 'run' the next num_tokens of seq, as one scheduler step would."""
    if not kv.allocate(seq, num_tokens):
        return False
    seq.num_computed_tokens += num_tokens
    kv.cache_full_blocks(seq)
    return True


def admit(kv: KVCacheManager, seq: Sequence) -> int:
    """Admit seq with its prefix hits and compute the whole rest of it; the cached tokens."""
    blocks, num_cached = kv.get_computed_blocks(seq)
    assert kv.allocate(seq, seq.num_tokens - num_cached, blocks)
    seq.num_computed_tokens = seq.num_tokens
    kv.cache_full_blocks(seq)
    return num_cached


# --- BlockPool ---------------------------------------------------------------------------------


def test_pool_allocates_and_frees_with_ref_counts() -> None:
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert len(set(blocks)) == 3
    assert [pool.ref_count(b) for b in blocks] == [1, 1, 1]
    assert (pool.num_free_blocks, pool.num_used_blocks) == (1, 3)
    pool.free(blocks)
    assert (pool.num_free_blocks, pool.num_used_blocks) == (4, 0)


def test_pool_refuses_to_over_allocate_or_double_free() -> None:
    pool = BlockPool(2)
    with pytest.raises(ValueError, match="3 blocks"):
        pool.allocate(3)
    (block,) = pool.allocate(1)
    pool.free([block])
    with pytest.raises(ValueError, match="freed more often"):
        pool.free([block])


def test_pool_reuses_never_cached_blocks_before_evicting_lru() -> None:
    pool = BlockPool(4)
    b0, b1, b2, b3 = pool.allocate(4)
    for block, name in ((b0, b"h0"), (b1, b"h1"), (b2, b"h2")):
        assert pool.cache(block, name)
    for block in (b1, b0, b2, b3):  # freed in this order: LRU is b1, then b0, then b2
        pool.free([block])
    assert pool.evictable_block_ids() == [b1, b0, b2]

    assert pool.allocate(1) == [b3]  # never cached: taken first, nothing evicted
    assert pool.num_evictions == 0
    assert pool.allocate(1) == [b1]  # least recently freed cached block
    assert pool.lookup(b"h1") is None and pool.block_hash(b1) is None
    assert pool.lookup(b"h0") == b0
    assert pool.allocate(2) == [b0, b2]
    assert pool.num_evictions == 3 and pool.num_cached_blocks == 0


def test_pool_touch_revives_an_evictable_block() -> None:
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.cache(block, b"h")
    pool.free([block])
    assert pool.num_free_blocks == 2 and pool.evictable_block_ids() == [block]
    pool.touch([block])
    assert pool.ref_count(block) == 1 and pool.num_free_blocks == 1
    assert pool.evictable_block_ids() == []
    pool.touch([block])
    assert pool.ref_count(block) == 2


def test_pool_caches_a_hash_once() -> None:
    pool = BlockPool(2)
    first, second = pool.allocate(2)
    assert pool.cache(first, b"h")
    assert not pool.cache(second, b"h")
    assert pool.lookup(b"h") == first and pool.block_hash(second) is None
    pool.free([second])
    assert pool.evictable_block_ids() == []  # an uncached block goes to the plain free list


def test_block_hash_is_a_stable_chain() -> None:
    first = hash_block_tokens(None, [1, 2, 3, 4])
    assert first == hash_block_tokens(None, (1, 2, 3, 4))
    assert first == hashlib.sha256(b"".join(t.to_bytes(8, "little") for t in (1, 2, 3, 4))).digest()
    assert hash_block_tokens(first, [5, 6, 7, 8]) != hash_block_tokens(None, [5, 6, 7, 8])
    assert hash_block_tokens(None, [1, 2, 3, 5]) != first


def test_num_blocks_for_rounds_up() -> None:
    assert [num_blocks_for(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


# --- KVCacheManager ----------------------------------------------------------------------------


def test_allocate_is_all_or_nothing() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)
    first = make_sequence("a", range(10))
    assert kv.allocate(first, 10)
    assert len(first.block_table) == 3
    second = make_sequence("b", range(100, 108))
    assert not kv.allocate(second, 8)
    assert second.block_table == [] and kv.num_free_blocks == 1
    assert kv.allocate(second, 4)


def test_allocate_takes_a_new_block_only_at_a_block_boundary() -> None:
    kv = KVCacheManager(num_blocks=4, block_size=4)
    seq = make_sequence("a", range(3))
    assert compute(kv, seq, 3)
    assert len(seq.block_table) == 1
    seq.append_token(9)
    assert compute(kv, seq, 1)
    assert len(seq.block_table) == 1
    seq.append_token(9)
    assert compute(kv, seq, 1)
    assert len(seq.block_table) == 2
    assert kv.slot_mapping(seq, 3, 5) == (
        seq.block_table[0] * 4 + 3,
        seq.block_table[1] * 4 + 0,
    )


def test_same_prefix_shares_blocks_with_ref_count_two() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    prefix = list(range(8))
    first = make_sequence("a", [*prefix, 50, 51])
    assert admit(kv, first) == 0
    second = make_sequence("b", [*prefix, 60])
    assert admit(kv, second) == 8
    assert second.block_table[:2] == first.block_table[:2]
    assert second.block_table[2] != first.block_table[2]
    assert [kv.pool.ref_count(b) for b in first.block_table[:2]] == [2, 2]
    assert (kv.prefix_cache_queries, kv.prefix_cache_hits) == (10 + 9, 8)
    check_block_invariants(kv, [first, second])

    kv.free(first)
    assert [kv.pool.ref_count(b) for b in second.block_table[:2]] == [1, 1]
    kv.free(second)
    assert kv.pool.num_used_blocks == 0
    assert kv.pool.num_evictable_blocks == 2  # the two full prefix blocks stay cached


def test_a_fully_cached_prompt_still_computes_its_last_token() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4)
    prompt = list(range(8))
    admit(kv, make_sequence("a", prompt))
    blocks, num_cached = kv.get_computed_blocks(make_sequence("b", prompt))
    assert (len(blocks), num_cached) == (1, 4)
    blocks, num_cached = kv.get_computed_blocks(make_sequence("c", [*prompt, 8]))
    assert (len(blocks), num_cached) == (2, 8)


def test_hits_stop_at_the_first_miss_and_after_eviction() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=2)
    first = make_sequence("a", [1, 2, 3, 4, 5])
    admit(kv, first)
    kv.free(first)  # its two full blocks are now evictable, tail block first in the LRU
    assert kv.get_computed_blocks(make_sequence("x", [1, 2, 9, 9, 9]))[1] == 2
    filler = make_sequence("b", [7, 7])
    assert compute(kv, filler, 2)  # takes the never-cached block
    other = make_sequence("c", [8, 8])
    assert compute(kv, other, 2)  # must evict: the LRU is the tail block [3, 4]
    assert kv.get_computed_blocks(make_sequence("y", [1, 2, 3, 4, 5]))[1] == 2


def test_prefix_caching_off_never_hits() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    admit(kv, make_sequence("a", range(6)))
    assert kv.get_computed_blocks(make_sequence("b", range(6))) == ([], 0)
    assert kv.pool.num_cached_blocks == 0 and kv.prefix_cache_queries == 0


def test_usage_and_real_token_fraction() -> None:
    kv = KVCacheManager(num_blocks=10, block_size=4)
    first = make_sequence("a", range(10))  # 3 blocks, 10 tokens
    admit(kv, first)
    assert kv.usage() == pytest.approx(0.3)
    assert kv.num_tokens_stored == 10
    assert kv.token_usage() == pytest.approx(10 / 40)
    second = make_sequence("b", [*range(8), 99])  # shares 2 blocks, adds 1 block, 1 token
    admit(kv, second)
    assert kv.usage() == pytest.approx(0.4)
    assert kv.num_tokens_stored == 11


def test_revived_hits_count_against_free_blocks() -> None:
    kv = KVCacheManager(num_blocks=3, block_size=2)
    first = make_sequence("a", [1, 2, 3, 4, 5])
    admit(kv, first)
    kv.free(first)  # 2 cached evictable blocks + 1 free
    seq = make_sequence("b", [1, 2, 3, 4, 6, 7, 8, 9])
    blocks, num_cached = kv.get_computed_blocks(seq)
    assert num_cached == 4
    # 4 more tokens need 2 new blocks, but reviving the 2 hits leaves only 1 free.
    assert not kv.allocate(seq, 4, blocks)
    assert seq.block_table == [] and kv.num_free_blocks == 3
    assert kv.allocate(seq, 2, blocks)
    assert seq.num_computed_tokens == 4 and len(seq.block_table) == 3


# --- property: random allocate / compute / free --------------------------------------------


class BlockPoolMachine(RuleBasedStateMachine):
    """Random sequences over a tiny alphabet (so prefixes collide) on a small cache."""

    @initialize(
        num_blocks=st.integers(2, 12),
        block_size=st.integers(1, 4),
        caching=st.booleans(),
    )
    def setup(self, num_blocks: int, block_size: int, caching: bool) -> None:
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=caching)
        self.live: dict[str, Sequence] = {}
        self.slots: dict[int, int] = {}  # simulated KV: slot -> token
        self.count = 0

    def _write(self, seq: Sequence, start: int) -> None:
        end = seq.num_computed_tokens
        slots = self.kv.slot_mapping(seq, start, end)
        for slot, token in zip(slots, seq.token_ids[start:end], strict=True):
            self.slots[slot] = token

    @rule(prompt=st.lists(st.integers(0, 2), min_size=1, max_size=14), data=st.data())
    def add(self, prompt: list[int], data: st.DataObject) -> None:
        self.count += 1
        seq = make_sequence(f"s{self.count}", prompt)
        blocks, num_cached = self.kv.get_computed_blocks(seq)
        num_new = data.draw(st.integers(1, seq.num_tokens - num_cached))
        if self.kv.allocate(seq, num_new, blocks):
            seq.num_computed_tokens += num_new
            self._write(seq, num_cached)
            self.kv.cache_full_blocks(seq)
            self.live[seq.request_id] = seq

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 2))
    def step(self, data: st.DataObject, token: int) -> None:
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if seq.num_uncomputed_tokens == 0:
            seq.append_token(token)
        num_new = data.draw(st.integers(1, seq.num_uncomputed_tokens))
        start = seq.num_computed_tokens
        if compute(self.kv, seq, num_new):
            self._write(seq, start)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.kv.free(seq)
        assert seq.block_table == []

    @invariant()
    def books_balance(self) -> None:
        check_block_invariants(self.kv, self.live.values())
        pool = self.kv.pool
        assert pool.num_free_blocks + pool.num_used_blocks == pool.num_blocks

    @invariant()
    def every_sequence_reads_back_its_own_tokens(self) -> None:
        for seq in self.live.values():
            stored = [self.slots[s] for s in self.kv.slot_mapping(seq, 0, seq.num_computed_tokens)]
            assert stored == seq.token_ids[: seq.num_computed_tokens]
            assert len(seq.block_table) == num_blocks_for(
                seq.num_computed_tokens, self.kv.block_size
            )


BlockPoolMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestBlockPoolMachine = BlockPoolMachine.TestCase
