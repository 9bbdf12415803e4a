"""Continuous batching: each step, decide which tokens of which sequences the runner computes.

The engine drives it with two calls per step: ``schedule()`` plans the step, the runner
computes it, and ``update()`` records what was computed and sampled. Pure: no torch, no I/O.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from inferd.errors import ConfigError, InvalidRequest
from inferd.llm.kv_cache import KVCacheManager
from inferd.llm.sequence import FinishReason, Sequence, SequenceStatus


class RequestTooLong(InvalidRequest):
    """The prompt needs more KV slots than the whole cache has (or one step may compute)."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """How big the KV cache is and how the scheduler spends each step."""

    max_num_seqs: int = 256
    """Most sequences running at once, and so in one step."""
    max_num_batched_tokens: int = 2048
    """Token budget of a step: the most tokens one forward pass computes."""
    block_size: int = 16
    """Tokens per KV block."""
    num_blocks: int = 1024
    """KV blocks in the cache (the runner sizes this from free accelerator memory)."""
    enable_prefix_caching: bool = True
    """Share the KV of full blocks between sequences with the same prefix."""
    enable_chunked_prefill: bool = True
    """Split long prompts across steps; off, a sequence's pending tokens go in one step."""
    long_prefill_token_threshold: int = 0
    """Most tokens one sequence gets per step (0: no cap), so prompts share a step's budget."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first out-of-bounds field."""
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_blocks"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"scheduler: {name} = {value!r}: expected an integer >= 1")
        threshold = self.long_prefill_token_threshold
        if threshold < 0:
            raise ConfigError(
                f"scheduler: long_prefill_token_threshold = {threshold!r}: expected >= 0"
            )
        if threshold and not self.enable_chunked_prefill:
            raise ConfigError(
                f"scheduler: long_prefill_token_threshold = {threshold!r} needs chunked prefill"
            )

    @property
    def max_seq_len(self) -> int:
        """Most tokens whose KV one sequence can hold, given the cache and the step budget."""
        num_slots = self.num_blocks * self.block_size
        if self.enable_chunked_prefill:
            return num_slots
        # Without chunking, recomputing a preempted sequence takes all its tokens in one step.
        return min(num_slots, self.max_num_batched_tokens)


@dataclass(frozen=True, slots=True)
class ScheduledSequence:
    """One sequence's share of a step: which tokens to compute and where their KV goes."""

    request_id: str
    token_ids: tuple[int, ...]
    positions: tuple[int, ...]
    slot_mapping: tuple[int, ...]
    """Cache slot of each token: block_id * block_size + offset in the block."""
    block_table: tuple[int, ...]
    """Every block of the sequence, so attention can read the whole context."""
    samples: bool
    """Whether this chunk reaches the last known token, so a token is sampled from it."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_context_tokens(self) -> int:
        """Tokens whose KV is in the cache before this chunk."""
        return self.positions[0]


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """The plan of one step, for the runner."""

    scheduled: tuple[ScheduledSequence, ...]
    preempted_ids: tuple[str, ...] = ()
    """Sequences whose KV was dropped this step; they are recomputed later."""
    finished_ids: tuple[str, ...] = ()
    """Sequences finished or aborted since the previous step; the runner drops their state."""

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(chunk.num_tokens for chunk in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    """What the runner sampled: one token per sequence whose chunk ``samples``."""

    sampled_token_ids: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One new token of one sequence, and whether it was the last."""

    request_id: str
    token_id: int
    finished: bool
    finish_reason: FinishReason | None = None
    logprob: float | None = None
    """The token's log-probability, when its request asked for logprobs."""
    top_logprobs: list[tuple[int, float]] | None = None
    """The most likely ``(token_id, logprob)`` alternatives at this position, best first."""


@dataclass(slots=True)
class _StepPlan:
    token_budget: int
    chunks: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)

    def add(self, seq: Sequence, num_tokens: int) -> None:
        self.chunks.append((seq, num_tokens))
        self.token_budget -= num_tokens


class Scheduler:
    """Continuous batching over a paged KV cache, with chunked prefill and preemption."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.kv_cache = KVCacheManager(
            config.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        """Kept in priority order: earliest arrival first."""
        self.num_preemptions = 0
        self._requests: dict[str, Sequence] = {}
        self._add_order: dict[str, int] = {}
        self._counter = itertools.count()
        self._finished_ids: list[str] = []

    # --- requests ---------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence; ``RequestTooLong`` if its prompt can never fit."""
        if seq.request_id in self._requests:
            raise InvalidRequest(f"request id {seq.request_id!r} is already in use")
        if seq.status is not SequenceStatus.WAITING or seq.num_computed_tokens or seq.block_table:
            raise InvalidRequest(f"request {seq.request_id!r} is not a fresh sequence")
        if seq.num_prompt_tokens > self.config.max_seq_len:
            raise RequestTooLong(
                f"request {seq.request_id!r} has {seq.num_prompt_tokens} prompt tokens; "
                f"at most {self.config.max_seq_len} fit ({self.config.num_blocks} blocks of "
                f"{self.config.block_size} tokens, {self.config.max_num_batched_tokens} per step)"
            )
        self._requests[seq.request_id] = seq
        self._add_order[seq.request_id] = next(self._counter)
        self.waiting.append(seq)

    def abort(self, request_id: str) -> bool:
        """Stop a sequence wherever it is and free its blocks; False if it is unknown."""
        return self.finish(request_id, FinishReason.ABORT)

    def finish(self, request_id: str, reason: FinishReason = FinishReason.STOP) -> bool:
        """End a sequence for a reason found outside the scheduler, such as a stop string."""
        seq = self._requests.get(request_id)
        if seq is None:
            return False
        self._finish(seq, reason)
        return True

    def get(self, request_id: str) -> Sequence | None:
        """The unfinished sequence with this id."""
        return self._requests.get(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # --- the step contract ------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Plan the next step.

        There are no prefill and decode phases: every sequence knows more tokens (prompt plus
        sampled outputs) than it has computed, and each step spends a budget of
        ``max_num_batched_tokens`` so that computed tokens catch up with known ones. A decode
        is a sequence one token behind, a prefill one many tokens behind, and a long prompt is
        cut into chunks so that it never stalls the others' decoding. Running sequences go
        first, earliest arrival first, because they hold blocks and have streams in flight;
        when one needs a block and none is free, the latest arrival is preempted and later
        recomputed from its tokens, because dropping KV is cheap and dropping a request is
        not. Waiting sequences are then admitted first come first served while budget,
        ``max_num_seqs`` and blocks last, skipping the full blocks the prefix cache already
        holds, but not in a step that preempted: admitting then would only evict again.
        """
        plan = _StepPlan(token_budget=self.config.max_num_batched_tokens)
        self._schedule_running(plan)
        if not plan.preempted_ids:
            self._schedule_waiting(plan)
        return self._build_output(plan)

    def update(self, output: SchedulerOutput, runner_output: RunnerOutput) -> list[StepOutput]:
        """Record a computed step: advance progress, cache full blocks, append the samples.

        Sequences finished or aborted since ``output`` was planned are skipped, as is an
        ``output`` that is no longer the latest plan for a sequence.
        """
        current = [chunk for chunk in output.scheduled if self._is_current(chunk)]
        sampled = runner_output.sampled_token_ids
        missing = [c.request_id for c in current if c.samples and c.request_id not in sampled]
        if missing:
            raise ValueError(f"the runner sampled no token for {sorted(missing)}")
        step_outputs: list[StepOutput] = []
        for chunk in current:
            seq = self._requests[chunk.request_id]
            seq.num_computed_tokens += chunk.num_tokens
            self.kv_cache.cache_full_blocks(seq)
            if chunk.samples:
                step_outputs.append(self._append_sample(seq, runner_output))
        return step_outputs

    # --- scheduling steps -------------------------------------------------------------------

    def _schedule_running(self, plan: _StepPlan) -> None:
        index = 0
        while index < len(self.running) and plan.token_budget > 0:
            seq = self.running[index]
            num_new = self._num_tokens_to_schedule(seq.num_uncomputed_tokens, plan.token_budget)
            if self._allocate_or_preempt(seq, num_new, plan):
                plan.add(seq, num_new)
                index += 1
            # Otherwise seq itself was the last running sequence and got preempted.

    def _allocate_or_preempt(self, seq: Sequence, num_new: int, plan: _StepPlan) -> bool:
        # Victims come from the tail of the priority-ordered list, so they were never
        # scheduled earlier in this step.
        while not self.kv_cache.allocate(seq, num_new):
            victim = self.running.pop()
            self._preempt(victim)
            plan.preempted_ids.append(victim.request_id)
            if victim is seq:
                return False
        return True

    def _schedule_waiting(self, plan: _StepPlan) -> None:
        while (
            self.waiting and plan.token_budget > 0 and len(self.running) < self.config.max_num_seqs
        ):
            seq = self.waiting[0]
            computed_blocks, num_cached = self.kv_cache.get_computed_blocks(seq)
            num_new = self._num_tokens_to_schedule(seq.num_tokens - num_cached, plan.token_budget)
            if num_new == 0 or not self.kv_cache.allocate(seq, num_new, computed_blocks):
                break  # first come first served: nobody overtakes the head of the queue
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=self._priority)
            plan.add(seq, num_new)

    def _num_tokens_to_schedule(self, num_pending: int, token_budget: int) -> int:
        """Tokens to compute for a sequence this step; 0 if it must wait for a whole step."""
        threshold = self.config.long_prefill_token_threshold
        num_tokens = min(num_pending, threshold) if threshold else num_pending
        if num_tokens <= token_budget:
            return num_tokens
        return token_budget if self.config.enable_chunked_prefill else 0

    def _build_output(self, plan: _StepPlan) -> SchedulerOutput:
        finished_ids = tuple(self._finished_ids)
        self._finished_ids.clear()
        return SchedulerOutput(
            scheduled=tuple(self._describe(seq, n) for seq, n in plan.chunks),
            preempted_ids=tuple(plan.preempted_ids),
            finished_ids=finished_ids,
        )

    def _describe(self, seq: Sequence, num_tokens: int) -> ScheduledSequence:
        start = seq.num_computed_tokens
        end = start + num_tokens
        return ScheduledSequence(
            request_id=seq.request_id,
            token_ids=tuple(seq.token_ids[start:end]),
            positions=tuple(range(start, end)),
            slot_mapping=self.kv_cache.slot_mapping(seq, start, end),
            block_table=tuple(seq.block_table),
            samples=end == seq.num_tokens,
        )

    # --- state changes ----------------------------------------------------------------------

    def _priority(self, seq: Sequence) -> tuple[float, int]:
        return (seq.arrival_time, self._add_order[seq.request_id])

    def _preempt(self, seq: Sequence) -> None:
        self.kv_cache.free(seq)
        seq.num_computed_tokens = 0  # its outputs so far are kept, and recomputed as prompt
        seq.status = SequenceStatus.PREEMPTED
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _is_current(self, chunk: ScheduledSequence) -> bool:
        seq = self._requests.get(chunk.request_id)
        return (
            seq is not None
            and seq.status is SequenceStatus.RUNNING
            and seq.num_computed_tokens == chunk.num_context_tokens
        )

    def _append_sample(self, seq: Sequence, runner_output: RunnerOutput) -> StepOutput:
        token_id = runner_output.sampled_token_ids[seq.request_id]
        seq.append_token(token_id)
        reason = seq.stop_reason()
        if reason is None and seq.num_tokens > self.config.max_seq_len:
            reason = FinishReason.LENGTH  # the next token's KV would not fit in the cache
        if reason is not None:
            self._finish(seq, reason)
        return StepOutput(seq.request_id, token_id, reason is not None, reason)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.kv_cache.free(seq)
        else:
            self.waiting.remove(seq)
        seq.status = reason.status
        seq.finish_reason = reason
        del self._requests[seq.request_id]
        del self._add_order[seq.request_id]
        self._finished_ids.append(seq.request_id)
