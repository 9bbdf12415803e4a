"""Property: random arrivals and aborts on a small cache always finish, with the right tokens."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from inferd.llm.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from inferd.llm.sequence import FinishReason
from inferd.llm.testing import (
    Completion,
    FakeRunner,
    check_block_invariants,
    make_sequence,
    reference_tokens,
)

MAX_STEPS = 5_000
MIN_CACHE_TOKENS = 32  # more than any one request below needs, so each fits alone
PREFIXES: tuple[list[int], ...] = ([], [1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0])


@dataclass(frozen=True)
class Request:
    request_id: str
    prompt: list[int]
    max_tokens: int
    arrival_step: int
    abort_step: int | None


@st.composite
def configs(draw: st.DrawFn) -> SchedulerConfig:
    block_size = draw(st.sampled_from([1, 2, 4]))
    num_blocks = draw(st.integers(MIN_CACHE_TOKENS // block_size, 40 // block_size))
    chunked = draw(st.booleans())
    return SchedulerConfig(
        max_num_seqs=draw(st.integers(1, 4)),
        max_num_batched_tokens=draw(st.integers(1, 24)) if chunked else 64,
        block_size=block_size,
        num_blocks=num_blocks,
        enable_prefix_caching=draw(st.booleans()),
        enable_chunked_prefill=chunked,
        long_prefill_token_threshold=draw(st.integers(0, 6)) if chunked else 0,
    )


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(1, 8))
    drawn = []
    for index in range(count):
        prompt = draw(st.sampled_from(PREFIXES)) + draw(st.lists(st.integers(0, 3), max_size=8))
        drawn.append(
            Request(
                request_id=f"r{index}",
                prompt=prompt or [0],
                max_tokens=draw(st.integers(1, 10)),
                arrival_step=draw(st.integers(0, 12)),
                abort_step=draw(st.none() | st.integers(0, 40)),
            )
        )
    return drawn


def check_step(output: SchedulerOutput, scheduler: Scheduler, had_work: bool) -> None:
    config = scheduler.config
    ids = [chunk.request_id for chunk in output.scheduled]
    assert len(ids) == len(set(ids))
    assert output.num_scheduled_tokens <= config.max_num_batched_tokens
    assert len(ids) <= config.max_num_seqs and scheduler.num_running <= config.max_num_seqs
    assert all(chunk.num_tokens >= 1 for chunk in output.scheduled)
    if config.long_prefill_token_threshold:
        assert all(c.num_tokens <= config.long_prefill_token_threshold for c in output.scheduled)
    assert output.scheduled or not had_work, "a step with unfinished work scheduled nothing"


def drive(
    config: SchedulerConfig, workload: list[Request]
) -> tuple[dict[str, Completion], set[str]]:
    scheduler = Scheduler(config)
    runner = FakeRunner(config.block_size)
    completions = {r.request_id: Completion() for r in workload}
    aborted: set[str] = set()
    last_arrival = max(r.arrival_step for r in workload)
    for step in range(MAX_STEPS):
        for request in workload:
            if request.arrival_step == step:
                seq = make_sequence(request.request_id, request.prompt, request.max_tokens, step)
                scheduler.add(seq)
            if request.abort_step == step and scheduler.abort(request.request_id):
                aborted.add(request.request_id)
        if step > last_arrival and not scheduler.has_unfinished():
            assert scheduler.kv_cache.pool.num_used_blocks == 0
            event(f"preempted: {scheduler.num_preemptions > 0}")
            event(f"prefix hits: {scheduler.kv_cache.prefix_cache_hits > 0}")
            return completions, aborted
        had_work = scheduler.has_unfinished()
        output = scheduler.schedule()
        check_step(output, scheduler, had_work)
        for out in scheduler.update(output, runner.run(output)):
            completions[out.request_id].token_ids.append(out.token_id)
            completions[out.request_id].finish_reason = out.finish_reason
        check_block_invariants(scheduler.kv_cache, scheduler.running)
    raise AssertionError(f"unfinished after {MAX_STEPS} steps")


@settings(max_examples=150, deadline=None)
@given(config=configs(), workload=requests())
def test_every_request_finishes_with_the_tokens_of_an_uninterrupted_run(
    config: SchedulerConfig, workload: list[Request]
) -> None:
    completions, aborted = drive(config, workload)
    for request in workload:
        got = completions[request.request_id]
        expected = reference_tokens(request.prompt, request.max_tokens)
        if request.request_id in aborted:
            assert got.token_ids == expected[: len(got.token_ids)]
            assert got.finish_reason is None
        else:
            assert got.token_ids == expected
            assert got.finish_reason is FinishReason.LENGTH
