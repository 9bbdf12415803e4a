"""The scheduler driven by a fake runner: admission, chunking, preemption, prefix hits, stops."""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf

import pytest

from inferd.errors import ConfigError, InvalidRequest
from inferd.llm.scheduler import (
    RequestTooLong,
    RunnerOutput,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    StepOutput,
)
from inferd.llm.sequence import FinishReason, Sequence, SequenceStatus, StopCondition
from inferd.llm.testing import (
    FakeRunner,
    NextToken,
    check_block_invariants,
    make_scheduler,
    make_sequence,
    reference_tokens,
    run_to_completion,
)


def step(scheduler: Scheduler, runner: FakeRunner) -> tuple[SchedulerOutput, list[StepOutput]]:
    output = scheduler.schedule()
    outputs = scheduler.update(output, runner.run(output))
    check_block_invariants(scheduler.kv_cache, scheduler.running)
    return output, outputs


def chunk_sizes(output: SchedulerOutput) -> dict[str, int]:
    return {chunk.request_id: chunk.num_tokens for chunk in output.scheduled}


# --- admission ---------------------------------------------------------------------------------


def test_admission_stops_at_max_num_seqs() -> None:
    scheduler = make_scheduler(max_num_seqs=2)
    for name in "abc":
        scheduler.add(make_sequence(name, [1, 2, 3]))
    output = scheduler.schedule()
    assert chunk_sizes(output) == {"a": 3, "b": 3}
    assert scheduler.num_running == 2 and scheduler.num_waiting == 1


def test_admission_spends_the_token_budget_in_arrival_order() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=10)
    scheduler.add(make_sequence("a", range(6)))
    scheduler.add(make_sequence("b", range(6)))
    scheduler.add(make_sequence("c", range(2)))
    output = scheduler.schedule()
    assert chunk_sizes(output) == {"a": 6, "b": 4}
    assert output.num_scheduled_tokens == 10
    assert [chunk.samples for chunk in output.scheduled] == [True, False]


def test_the_head_of_the_queue_waits_for_blocks_and_nobody_overtakes_it() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    scheduler.add(make_sequence("a", range(12)))  # 3 of the 4 blocks
    scheduler.add(make_sequence("b", range(8)))  # needs 2
    scheduler.add(make_sequence("c", range(2)))  # would fit in 1, but arrived after b
    output = scheduler.schedule()
    assert chunk_sizes(output) == {"a": 12}
    assert [seq.request_id for seq in scheduler.waiting] == ["b", "c"]


def test_rejects_a_prompt_longer_than_the_whole_cache() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    with pytest.raises(RequestTooLong, match="17 prompt tokens; at most 16") as info:
        scheduler.add(make_sequence("long", range(17)))
    assert isinstance(info.value, InvalidRequest) and info.value.status_code == 400
    assert not scheduler.has_unfinished()


def test_a_prompt_filling_the_cache_gets_one_token_then_length() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    scheduler.add(make_sequence("full", range(16), max_tokens=5))
    done = run_to_completion(scheduler, FakeRunner(block_size=4))
    assert len(done["full"].token_ids) == 1
    assert done["full"].finish_reason is FinishReason.LENGTH


def test_rejects_duplicate_ids_and_used_sequences() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_sequence("a", [1]))
    with pytest.raises(InvalidRequest, match="already in use"):
        scheduler.add(make_sequence("a", [2]))
    used = make_sequence("b", [1])
    used.status = SequenceStatus.RUNNING
    with pytest.raises(InvalidRequest, match="not a fresh sequence"):
        scheduler.add(used)


def test_bad_requests_and_configs_are_rejected() -> None:
    with pytest.raises(InvalidRequest, match="empty prompt"):
        make_sequence("a", [])
    with pytest.raises(InvalidRequest, match="max_tokens"):
        make_sequence("a", [1], max_tokens=0)
    with pytest.raises(ConfigError, match="num_blocks = 0"):
        SchedulerConfig(num_blocks=0)
    with pytest.raises(ConfigError, match="needs chunked prefill"):
        SchedulerConfig(enable_chunked_prefill=False, long_prefill_token_threshold=8)
    with pytest.raises(ConfigError, match="long_prefill_token_threshold = -1"):
        SchedulerConfig(long_prefill_token_threshold=-1)


# --- chunked prefill ---------------------------------------------------------------------------


def test_a_long_prompt_is_chunked_while_another_sequence_keeps_decoding() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(block_size=4)
    short = make_sequence("short", [5, 6, 7], max_tokens=20)
    long_prompt = list(range(30))
    scheduler.add(short)
    step(scheduler, runner)  # short's prefill, and its first token
    scheduler.add(make_sequence("long", long_prompt, max_tokens=3))

    tokens: dict[str, list[int]] = {"short": [*short.output_token_ids], "long": []}
    for expected_long_chunk in (7, 7, 7, 7, 2):
        output, outputs = step(scheduler, runner)
        assert chunk_sizes(output) == {"short": 1, "long": expected_long_chunk}
        for out in outputs:
            tokens[out.request_id].append(out.token_id)
    # short produced a token in every one of those steps; long sampled only at the end.
    assert len(tokens["short"]) == 6 and len(tokens["long"]) == 1
    assert tokens["short"] == reference_tokens([5, 6, 7], 6)
    assert tokens["long"] == reference_tokens(long_prompt, 1)


def test_the_long_prefill_threshold_shares_a_step_between_prompts() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=16, long_prefill_token_threshold=4)
    scheduler.add(make_sequence("a", range(10)))
    scheduler.add(make_sequence("b", range(10)))
    assert chunk_sizes(scheduler.schedule()) == {"a": 4, "b": 4}


def test_without_chunked_prefill_a_prompt_waits_for_room_for_all_of_it() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8, enable_chunked_prefill=False)
    runner = FakeRunner(block_size=4)
    with pytest.raises(RequestTooLong, match="8 per step"):
        scheduler.add(make_sequence("huge", range(9)))
    scheduler.add(make_sequence("a", range(6)))
    scheduler.add(make_sequence("b", range(10, 16)))
    output, _ = step(scheduler, runner)
    assert chunk_sizes(output) == {"a": 6}
    output, _ = step(scheduler, runner)
    assert chunk_sizes(output) == {"a": 1, "b": 6}


# --- preemption --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preempted_sequence_resumes_and_yields_the_same_tokens(prefix_caching: bool) -> None:
    # 16 slots; each sequence grows to 6 + 8 - 1 = 13 tokens of KV, so both cannot finish at once.
    scheduler = make_scheduler(num_blocks=4, block_size=4, enable_prefix_caching=prefix_caching)
    runner = FakeRunner(block_size=4)
    prompts = {"a": [1, 2, 3, 4, 5, 6], "b": [9, 8, 7, 6, 5, 4]}
    for name, prompt in prompts.items():
        scheduler.add(make_sequence(name, prompt, max_tokens=8))
    seqs = {name: scheduler.get(name) for name in prompts}

    preempted: list[str] = []
    tokens: dict[str, list[int]] = {"a": [], "b": []}
    while scheduler.has_unfinished():
        output, outputs = step(scheduler, runner)
        preempted.extend(output.preempted_ids)
        if output.preempted_ids:
            assert scheduler.waiting[0].request_id == "b"
            assert scheduler.waiting[0].status is SequenceStatus.PREEMPTED
            assert scheduler.waiting[0].num_computed_tokens == 0
        for out in outputs:
            tokens[out.request_id].append(out.token_id)

    assert preempted and set(preempted) == {"b"}  # the later arrival is always the victim
    for name, prompt in prompts.items():
        assert tokens[name] == reference_tokens(prompt, 8)
    assert seqs["b"] is not None and seqs["b"].num_preemptions == len(preempted)
    assert seqs["a"] is not None and seqs["a"].num_preemptions == 0
    assert scheduler.num_preemptions == len(preempted)
    assert scheduler.kv_cache.pool.num_used_blocks == 0


def test_preemption_pauses_admission_and_puts_the_victim_before_new_arrivals() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_num_batched_tokens=64)
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", range(8), max_tokens=8))
    scheduler.add(make_sequence("b", range(100, 108), max_tokens=8))
    step(scheduler, runner)  # both prefilled: 4 blocks in use, both at a block boundary
    scheduler.add(make_sequence("c", [1]))
    output = scheduler.schedule()
    assert output.preempted_ids == ("b",)
    assert chunk_sizes(output) == {"a": 1}  # nobody admitted in a step that preempted
    assert [seq.request_id for seq in scheduler.waiting] == ["b", "c"]


def test_the_latest_arrival_is_preempted_first() -> None:
    scheduler = make_scheduler(num_blocks=5, block_size=2)
    runner = FakeRunner(block_size=2)
    # Added out of arrival order: arrival time, not add order, sets priority.
    scheduler.add(make_sequence("late", [1, 2], max_tokens=8, arrival_time=3.0))
    scheduler.add(make_sequence("early", [3, 4], max_tokens=8, arrival_time=1.0))
    scheduler.add(make_sequence("mid", [5, 6], max_tokens=8, arrival_time=2.0))
    step(scheduler, runner)
    assert [seq.request_id for seq in scheduler.running] == ["early", "mid", "late"]
    output = scheduler.schedule()  # each needs a second block, and only 2 are free
    assert output.preempted_ids == ("late",)


# --- prefix caching ----------------------------------------------------------------------------


def test_a_shared_prefix_is_computed_once_and_its_blocks_shared() -> None:
    scheduler = make_scheduler(block_size=4)
    runner = FakeRunner(block_size=4)
    prefix = list(range(16))
    scheduler.add(make_sequence("a", [*prefix, 1, 2], max_tokens=4))
    step(scheduler, runner)
    scheduler.add(make_sequence("b", [*prefix, 3, 4], max_tokens=4))
    output = scheduler.schedule()
    (chunk_b,) = [c for c in output.scheduled if c.request_id == "b"]
    assert chunk_b.positions == (16, 17)  # the 16 prefix tokens came from the cache
    a, b = scheduler.get("a"), scheduler.get("b")
    assert a is not None and b is not None
    assert a.block_table[:4] == b.block_table[:4]
    assert all(scheduler.kv_cache.pool.ref_count(blk) == 2 for blk in b.block_table[:4])
    assert b.num_prefix_hit_tokens == 16
    assert scheduler.kv_cache.prefix_cache_hits == 16

    done = run_to_completion(scheduler, runner)
    assert done["b"].token_ids == reference_tokens([*prefix, 3, 4], 4)


def test_a_finished_prompt_is_reused_but_its_last_token_recomputed() -> None:
    scheduler = make_scheduler(block_size=4)
    runner = FakeRunner(block_size=4)
    prompt = list(range(8))
    scheduler.add(make_sequence("a", prompt, max_tokens=1))
    run_to_completion(scheduler, runner)
    scheduler.add(make_sequence("b", prompt, max_tokens=3))
    output = scheduler.schedule()
    (chunk,) = output.scheduled
    assert chunk.positions == (4, 5, 6, 7) and chunk.samples
    assert output.finished_ids == ("a",)
    done = run_to_completion(scheduler, runner)
    assert done["b"].token_ids == reference_tokens(prompt, 3)


def test_cached_blocks_are_evicted_least_recently_freed_first() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=2)
    runner = FakeRunner(block_size=2)
    scheduler.add(make_sequence("old", [1, 1, 1], max_tokens=1))
    run_to_completion(scheduler, runner)
    scheduler.add(make_sequence("new", [2, 2, 2], max_tokens=1))
    run_to_completion(scheduler, runner)
    # Both full first blocks are cached; the 2 never-cached blocks go first, then "old"'s.
    scheduler.add(make_sequence("filler", [5, 5, 5, 5, 5, 5], max_tokens=1))
    run_to_completion(scheduler, runner)
    kv = scheduler.kv_cache
    assert kv.get_computed_blocks(make_sequence("x", [1, 1, 1]))[1] == 0
    assert kv.get_computed_blocks(make_sequence("y", [2, 2, 2]))[1] == 2


# --- abort and finish --------------------------------------------------------------------------


def test_abort_mid_prefill_frees_the_blocks() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=4)
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", range(12)))
    step(scheduler, runner)
    assert scheduler.kv_cache.pool.num_used_blocks == 1
    assert scheduler.abort("a")
    assert scheduler.kv_cache.pool.num_used_blocks == 0
    assert not scheduler.has_unfinished()
    assert scheduler.schedule().finished_ids == ("a",)
    assert not scheduler.abort("a")


def test_abort_mid_decode_frees_the_blocks_and_marks_the_sequence() -> None:
    scheduler = make_scheduler()
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", range(5), max_tokens=10))
    scheduler.add(make_sequence("b", range(5), max_tokens=10))
    for _ in range(3):
        step(scheduler, runner)
    a = scheduler.get("a")
    assert a is not None and scheduler.abort("a")
    assert a.status is SequenceStatus.FINISHED_ABORTED and a.finish_reason is FinishReason.ABORT
    check_block_invariants(scheduler.kv_cache, scheduler.running)
    assert [seq.request_id for seq in scheduler.running] == ["b"]


def test_abort_of_a_waiting_sequence() -> None:
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add(make_sequence("a", [1]))
    scheduler.add(make_sequence("b", [1]))
    scheduler.schedule()
    assert scheduler.abort("b")
    assert scheduler.num_waiting == 0 and not scheduler.abort("missing")


def test_update_skips_a_sequence_aborted_after_it_was_scheduled() -> None:
    scheduler = make_scheduler()
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", [1, 2]))
    scheduler.add(make_sequence("b", [3, 4]))
    output = scheduler.schedule()
    scheduler.abort("a")
    outputs = scheduler.update(output, runner.run(output))
    assert [out.request_id for out in outputs] == ["b"]


def test_scheduling_twice_replans_the_same_tokens_and_stale_updates_are_ignored() -> None:
    scheduler = make_scheduler()
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", [1, 2, 3]))
    first = scheduler.schedule()
    second = scheduler.schedule()  # e.g. the runner failed and the engine retries
    assert first.scheduled == second.scheduled
    assert len(scheduler.update(second, runner.run(second))) == 1
    assert scheduler.update(first, runner.run(first)) == []


def test_update_requires_a_sample_for_each_sampling_chunk() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_sequence("a", [1, 2]))
    output = scheduler.schedule()
    with pytest.raises(ValueError, match="no token for \\['a'\\]"):
        scheduler.update(output, RunnerOutput({}))


def test_finishes_after_max_tokens() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_sequence("a", [1, 2, 3], max_tokens=3))
    seq = scheduler.get("a")
    done = run_to_completion(scheduler, FakeRunner(block_size=4))
    assert done["a"].token_ids == reference_tokens([1, 2, 3], 3)
    assert done["a"].finish_reason is FinishReason.LENGTH
    assert seq is not None and seq.status is SequenceStatus.FINISHED_LENGTH
    assert scheduler.kv_cache.pool.num_used_blocks == 0


def emit(tokens: SequenceOf[int], prompt_len: int) -> NextToken:
    """A fake model that emits ``tokens`` in order after a prompt of ``prompt_len`` tokens."""
    return lambda _rid, history: tokens[len(history) - prompt_len]


def test_finishes_on_a_stop_token_and_keeps_it() -> None:
    scheduler = make_scheduler()
    scheduler.add(make_sequence("a", [1, 2], max_tokens=10, stop_token_ids=[7]))
    done = run_to_completion(scheduler, FakeRunner(4, emit([3, 4, 7, 5], prompt_len=2)))
    assert done["a"].token_ids == [3, 4, 7]
    assert done["a"].finish_reason is FinishReason.STOP


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (StopCondition(max_tokens=5, eos_token_id=0), [3, 0]),
        (StopCondition(max_tokens=5, eos_token_id=0, ignore_eos=True), [3, 0, 4, 0, 6]),
        (StopCondition(max_tokens=5, eos_token_id=0, min_tokens=3), [3, 0, 4, 0]),
    ],
)
def test_eos_handling(condition: StopCondition, expected: list[int]) -> None:
    scheduler = make_scheduler()
    scheduler.add(Sequence("a", (1,), condition))
    done = run_to_completion(scheduler, FakeRunner(4, emit([3, 0, 4, 0, 6, 0], prompt_len=1)))
    assert done["a"].token_ids == expected


def test_finish_stops_a_sequence_for_a_stop_string() -> None:
    scheduler = make_scheduler()
    runner = FakeRunner(block_size=4)
    scheduler.add(make_sequence("a", [1, 2], max_tokens=10))
    step(scheduler, runner)
    seq = scheduler.get("a")
    assert scheduler.finish("a", FinishReason.STOP)
    assert seq is not None and seq.status is SequenceStatus.FINISHED_STOPPED
    assert scheduler.kv_cache.pool.num_used_blocks == 0
    assert scheduler.schedule() == SchedulerOutput(scheduled=(), finished_ids=("a",))
