"""Shipped fakes for the LLM core: a model runner without a model, and scheduler factories.

``FakeRunner`` plays the model for scheduler and engine tests without torch. It writes each
scheduled token into a simulated paged KV cache at the slot the scheduler chose, and reads a
sequence's whole context back through its block table before sampling. The token it samples
depends only on that context, so a scheduler or cache bug that loses, misplaces or overwrites
KV shows up as a different output, and a sequence recomputed after preemption produces exactly
the tokens an uninterrupted run would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field

from inferd.llm.kv_cache import KVCacheManager
from inferd.llm.scheduler import (
    RunnerOutput,
    ScheduledSequence,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
)
from inferd.llm.sequence import FinishReason, Sequence, StopCondition

NextToken = Callable[[str, SequenceOf[int]], int]
"""The fake model: (request id, every token so far) -> next token id."""


def history_token(history: SequenceOf[int], vocab_size: int = 1000) -> int:
    """The default fake model: a deterministic function of the token history alone."""
    return (sum(history) * 31 + len(history)) % vocab_size


def reference_tokens(
    prompt: SequenceOf[int],
    num_tokens: int,
    next_token: NextToken | None = None,
    request_id: str = "",
) -> list[int]:
    """The outputs an uninterrupted run of the fake model gives, for comparison."""
    model = next_token or (lambda _request_id, history: history_token(history))
    history = list(prompt)
    for _ in range(num_tokens):
        history.append(model(request_id, history))
    return history[len(prompt) :]


class FakeRunner:
    """A model runner over a simulated KV cache; see the module docstring."""

    def __init__(self, block_size: int, next_token: NextToken | None = None) -> None:
        self.block_size = block_size
        self.next_token = next_token or (lambda _request_id, history: history_token(history))
        self.num_steps = 0
        self.num_computed_tokens = 0
        self._slots: dict[int, int] = {}  # cache slot -> the token whose KV it holds

    def run(self, output: SchedulerOutput) -> RunnerOutput:
        """Compute one step: write every chunk's KV, then sample where a chunk asks to."""
        for chunk in output.scheduled:
            self._write(chunk)
        self.num_steps += 1
        self.num_computed_tokens += output.num_scheduled_tokens
        return RunnerOutput({c.request_id: self._sample(c) for c in output.scheduled if c.samples})

    def _slot(self, chunk: ScheduledSequence, position: int) -> int:
        block_id = chunk.block_table[position // self.block_size]
        return block_id * self.block_size + position % self.block_size

    def _write(self, chunk: ScheduledSequence) -> None:
        for position, slot, token_id in zip(
            chunk.positions, chunk.slot_mapping, chunk.token_ids, strict=True
        ):
            if slot != self._slot(chunk, position):
                raise AssertionError(f"{chunk.request_id}: slot {slot} is not at {position}")
            self._slots[slot] = token_id

    def _sample(self, chunk: ScheduledSequence) -> int:
        end = chunk.positions[-1] + 1
        try:
            history = [self._slots[self._slot(chunk, position)] for position in range(end)]
        except KeyError:
            raise AssertionError(f"{chunk.request_id}: reads KV never written") from None
        return self.next_token(chunk.request_id, history)


def check_block_invariants(kv_cache: KVCacheManager, holders: Iterable[Sequence]) -> None:
    """Raise ``AssertionError`` unless the pool's books match the block tables of ``holders``.

    ``holders`` must be every sequence holding blocks (a scheduler's ``running`` list). Checks
    that each ref count equals the number of tables holding the block (so none is negative and
    none leaks), that free blocks are exactly the unreferenced ones, and that a block appears
    in two tables only as the same cached prefix block of both.
    """
    pool = kv_cache.pool
    owners: dict[int, list[tuple[Sequence, int]]] = defaultdict(list)
    for seq in holders:
        for index, block_id in enumerate(seq.block_table):
            owners[block_id].append((seq, index))
    for block_id in range(pool.num_blocks):
        if pool.ref_count(block_id) != len(owners[block_id]):
            raise AssertionError(f"block {block_id}: ref count {pool.ref_count(block_id)}")
        if len(owners[block_id]) > 1:
            _check_shared_block(kv_cache, block_id, owners[block_id])
    unreferenced = [b for b in range(pool.num_blocks) if pool.ref_count(b) == 0]
    if len(unreferenced) != pool.num_free_blocks:
        raise AssertionError(f"{pool.num_free_blocks} free blocks, {len(unreferenced)} unused")
    for block_id in pool.evictable_block_ids():
        if pool.ref_count(block_id) or pool.block_hash(block_id) is None:
            raise AssertionError(f"evictable block {block_id} is in use or not cached")
    num_hashed = sum(1 for b in range(pool.num_blocks) if pool.block_hash(b) is not None)
    if num_hashed != pool.num_cached_blocks:
        raise AssertionError(f"{num_hashed} hashed blocks, {pool.num_cached_blocks} cached")


def _check_shared_block(
    kv_cache: KVCacheManager, block_id: int, owners: list[tuple[Sequence, int]]
) -> None:
    block_hash = kv_cache.pool.block_hash(block_id)
    for seq, index in owners:
        shared_prefix = (
            block_hash is not None
            and index < len(seq.block_hashes)
            and seq.block_hashes[index] == block_hash
            and seq.num_computed_tokens >= (index + 1) * kv_cache.block_size
        )
        if not shared_prefix:
            raise AssertionError(f"block {block_id} shared by {seq.request_id!r} at {index}")


def make_scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 64,
    enable_prefix_caching: bool = True,
    enable_chunked_prefill: bool = True,
    long_prefill_token_threshold: int = 0,
) -> Scheduler:
    """A scheduler with a small cache, for tests."""
    config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
        num_blocks=num_blocks,
        enable_prefix_caching=enable_prefix_caching,
        enable_chunked_prefill=enable_chunked_prefill,
        long_prefill_token_threshold=long_prefill_token_threshold,
    )
    return Scheduler(config)


def make_sequence(
    request_id: str,
    prompt: SequenceOf[int],
    max_tokens: int = 8,
    arrival_time: float = 0.0,
    stop_token_ids: Iterable[int] = (),
    eos_token_id: int | None = None,
) -> Sequence:
    """A fresh sequence; build ``StopCondition`` yourself for the rarer stop options."""
    condition = StopCondition(max_tokens, frozenset(stop_token_ids), eos_token_id)
    return Sequence(request_id, tuple(prompt), condition, arrival_time=arrival_time)


@dataclass(slots=True)
class Completion:
    """What a driven sequence produced."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None


def run_to_completion(
    scheduler: Scheduler, runner: FakeRunner, max_steps: int = 10_000
) -> dict[str, Completion]:
    """Loop schedule → run → update until nothing is unfinished; the outputs by request id."""
    completions: dict[str, Completion] = {}
    for _ in range(max_steps):
        if not scheduler.has_unfinished():
            return completions
        output = scheduler.schedule()
        for step in scheduler.update(output, runner.run(output)):
            completion = completions.setdefault(step.request_id, Completion())
            completion.token_ids.append(step.token_id)
            completion.finish_reason = step.finish_reason
    raise AssertionError(f"still unfinished after {max_steps} steps")
