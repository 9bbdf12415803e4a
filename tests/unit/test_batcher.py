"""The dynamic batcher's loop, driven with a fake ``run_batch`` (no model, no sleeps)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inferd.batching.batcher import Answer, BatcherConfig, DynamicBatcher
from inferd.batching.capacity import FixedCapacity
from inferd.batching.policy import BatchPolicy
from inferd.batching.queue import QueueLimits
from inferd.clock import FakeClock
from inferd.errors import ModelError, Overloaded, RequestTimeout

Tensors = dict[str, np.ndarray]


class FakeRunner:
    """Records every batch; blocks each batch until released so tests control timing."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on = fail_on
        self.cancelled = 0

    async def __call__(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append(x.shape[0])
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ModelError("bad row")
        return {"y": x * 2}


def make(  # noqa: PLR0913
    run: object,
    max_batch_size: int,
    max_queue_rows: int = 8192,
    batched: bool = True,
    concurrency: int = 1,
    priority_levels: int = 1,
    ahead: int = 0,
    clock: FakeClock | None = None,
) -> DynamicBatcher:
    config = BatcherConfig(
        limits=QueueLimits(max_rows=max_queue_rows, priority_levels=priority_levels),
        batched=batched,
        send_ahead=ahead > 0,
    )
    policy = BatchPolicy(max_batch_size=max_batch_size)
    capacity = FixedCapacity(concurrency, ahead)
    return DynamicBatcher("m", run, policy, capacity, config, clock)  # type: ignore[arg-type]


def rows(start: int, n: int) -> Tensors:
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


async def run(batcher: DynamicBatcher, *requests: Tensors) -> list[Tensors | BaseException]:
    answers = await asyncio.gather(
        *(batcher.submit(r, r["x"].shape[0]) for r in requests), return_exceptions=True
    )
    return [a.outputs if isinstance(a, Answer) else a for a in answers]


async def test_requests_arriving_while_busy_share_the_next_batch() -> None:
    runner = FakeRunner()
    batcher = make(runner, 8)
    batcher.start()
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows(0, 1), 1))
    await asyncio.sleep(0)  # let the loop dispatch the first batch (yields only, no time)
    while not runner.batches:
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    runner.gate.set()
    results = await asyncio.gather(first, *rest)
    assert runner.batches == [1, 5]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out.outputs["y"], [[2.0 * i]])
    await batcher.close()


async def test_rows_queued_behind_a_busy_replica_wait_the_delay_for_more_once_it_is_free() -> None:
    """Closed-loop clients must not stay split into half-size cohorts (see batching/policy.py):
    the delay counts from the moment the replica came free, not from the queued rows' arrival.
    The fake clock decides every wait; the loop's real timers only re-check it."""
    clock = FakeClock()
    runner = FakeRunner()
    runner.gate.clear()
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.010)
    batcher = DynamicBatcher("m", runner, policy, FixedCapacity(1), clock=clock)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0, 4), 4))  # full: goes at once
    while not runner.batches:
        await asyncio.sleep(0)
    queued = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in (4, 5)]
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(0.020)  # the queued rows have waited twice the delay when the replica frees
    runner.gate.set()
    await first
    for _ in range(10):
        await asyncio.sleep(0)
    assert runner.batches == [4]  # arrival-time counting would have sent [4, 2]
    more = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in (6, 7)]
    answers = await asyncio.gather(*queued, *more)
    assert runner.batches == [4, 4]
    assert [a.outputs["y"][0, 0] for a in answers] == [8.0, 10.0, 12.0, 14.0]
    # The delay still bounds the wait: once it has passed, a partial batch leaves.
    late = asyncio.ensure_future(batcher.submit(rows(8, 1), 1))
    for _ in range(10):
        await asyncio.sleep(0)
    assert runner.batches == [4, 4]
    clock.advance(0.011)
    last = await batcher.submit(rows(9, 1), 1)  # its arrival wakes the loop to look again
    await late
    assert runner.batches == [4, 4, 2]
    assert last.outputs["y"][0, 0] == 18.0
    await batcher.close()


async def test_each_request_gets_its_own_rows_back() -> None:
    runner = FakeRunner()
    batcher = make(runner, 64)
    batcher.start()
    requests = [rows(10 * i, i + 1) for i in range(6)]
    results = await run(batcher, *requests)
    for req, out in zip(requests, results, strict=True):
        assert isinstance(out, dict)
        np.testing.assert_array_equal(out["y"], req["x"] * 2)
    await batcher.close()


async def test_a_request_larger_than_the_batch_is_split_and_reassembled() -> None:
    runner = FakeRunner()
    batcher = make(runner, 4)
    batcher.start()
    [out] = await run(batcher, rows(0, 10))
    assert isinstance(out, dict)
    np.testing.assert_array_equal(out["y"], rows(0, 10)["x"] * 2)
    assert max(runner.batches) <= 4 and sum(runner.batches) == 10
    await batcher.close()


async def test_a_failing_row_fails_only_its_own_request() -> None:
    runner = FakeRunner(fail_on=3.0)
    batcher = make(runner, 64)
    batcher.start()
    results = await run(batcher, *(rows(i, 1) for i in range(6)))
    assert isinstance(results[3], ModelError)
    for i, out in enumerate(results):
        if i != 3:
            assert isinstance(out, dict)
            np.testing.assert_array_equal(out["y"], [[2.0 * i]])
    await batcher.close()


async def test_queue_over_its_bound_sheds_with_overloaded() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    batcher = make(runner, 2, max_queue_rows=4)
    batcher.start()
    tasks = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in range(20)]
    for _ in range(10):
        await asyncio.sleep(0)
    shed = [t for t in tasks if t.done() and isinstance(t.exception(), Overloaded)]
    assert shed and batcher.queued_rows == 4  # full to its bound, never past it
    assert all(t.exception().retry_after > 0 for t in shed)  # type: ignore[union-attr]
    runner.gate.set()
    kept = [t for t in tasks if t not in shed]
    answers = await asyncio.gather(*kept)
    assert len(answers) + len(shed) == 20 and len(kept) >= 5


async def test_cancelled_requests_are_not_computed() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    batcher = make(runner, 1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0, 1), 1))
    while not runner.batches:
        await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher.submit(rows(1, 1), 1))
    kept = asyncio.ensure_future(batcher.submit(rows(2, 1), 1))
    await asyncio.sleep(0)
    gone.cancel()
    runner.gate.set()
    await asyncio.gather(first, kept)
    assert runner.batches == [1, 1]  # the cancelled request never reached the model
    await batcher.close()


async def test_a_request_given_up_leaves_the_queue_at_once_with_all_its_pieces() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    batcher = make(runner, 2)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0, 2), 2))
    while not runner.batches:
        await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher.submit(rows(10, 6), 6))  # three pieces of 2 rows
    for _ in range(3):
        await asyncio.sleep(0)
    assert batcher.queued_rows == 6
    gone.cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    # Freed while the replica is still busy: admission sees the true queue, not a stale one.
    assert batcher.queued_rows == 0 and batcher.queued_requests == 0
    runner.gate.set()
    await first
    assert runner.batches == [2]  # no piece of the abandoned request was computed
    await batcher.close()


class ClockedRunner(FakeRunner):
    """Each batch takes one second of a fake clock: the batcher learns 2 rows/s."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    async def __call__(self, inputs: Tensors) -> Tensors:
        out = await super().__call__(inputs)
        self.clock.advance(1.0)
        return out


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _busy_at_a_known_speed(
    ahead: int,
) -> tuple[DynamicBatcher, ClockedRunner, asyncio.Future[Answer]]:
    """A batcher that measured 2 rows/s, its replica now holding a batch of 2 rows."""
    clock = FakeClock()
    runner = ClockedRunner(clock)
    batcher = make(runner, 2, ahead=ahead, clock=clock)
    batcher.start()
    await batcher.submit(rows(0, 2), 2)
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows(0, 2), 2))
    await _settle()
    return batcher, runner, first


@pytest.mark.parametrize("ahead", [0, 1])
async def test_a_full_batch_goes_ahead_to_a_busy_replica_a_partial_one_waits(ahead: int) -> None:
    batcher, runner, first = await _busy_at_a_known_speed(ahead)
    partial = asyncio.ensure_future(batcher.submit(rows(10, 1), 1))
    await _settle()
    assert runner.batches == [2, 2]  # one row: it waits for the replica, and for company
    rest = asyncio.ensure_future(batcher.submit(rows(11, 1), 1))
    await _settle()
    # Now a full batch: sent ahead if allowed, while the first still computes.
    assert runner.batches == ([2, 2, 2] if ahead else [2, 2])
    more = asyncio.ensure_future(batcher.submit(rows(20, 2), 2))
    await _settle()
    assert len(runner.batches) == (3 if ahead else 2)  # one batch ahead per replica at most
    runner.gate.set()
    answers = await asyncio.gather(first, partial, rest, more)
    np.testing.assert_array_equal(answers[2].outputs["y"], [[22.0]])
    assert runner.batches == [2, 2, 2, 2]
    await batcher.close()


async def test_a_batch_sent_ahead_is_called_off_when_its_requests_are_given_up() -> None:
    batcher, runner, first = await _busy_at_a_known_speed(1)
    gone = asyncio.ensure_future(batcher.submit(rows(10, 2), 2))
    await _settle()
    assert runner.batches == [2, 2, 2]  # sent ahead, waiting behind the first
    gone.cancel()
    await _settle()
    # Its run is cancelled: a process replica is sent Cancel and skips it if not started.
    assert runner.cancelled == 1
    runner.gate.set()
    await first
    await batcher.close()


async def test_a_batch_called_off_before_it_ran_still_gives_its_room_back() -> None:
    capacity = FixedCapacity(1)
    batcher = DynamicBatcher("m", FakeRunner(), BatchPolicy(2), capacity)
    assert capacity.try_acquire()
    task = batcher._start([])  # cancelled before its first step: its body never runs
    task.cancel()
    await _settle()
    assert task.cancelled() and capacity.try_acquire()


async def test_a_batch_that_would_miss_its_deadline_waiting_is_not_sent_ahead() -> None:
    batcher, runner, first = await _busy_at_a_known_speed(1)
    # Behind a batch of up to 1 s, then 1 s of its own: a 1.5 s deadline does not leave room.
    soon = asyncio.ensure_future(batcher.submit(rows(10, 2), 2, timeout_s=1.5))  # 1 s a batch
    await _settle()
    assert runner.batches == [2, 2]
    runner.gate.set()
    await asyncio.gather(first, soon)
    await batcher.close()


async def test_unbatched_models_get_requests_unchanged() -> None:
    seen: list[tuple[int, ...]] = []

    async def run_one(inputs: Tensors) -> Tensors:
        seen.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(keepdims=True)}

    batcher = make(run_one, 1, batched=False)
    batcher.start()
    out = await batcher.submit({"x": np.ones((3, 3), np.float32)}, 1)
    assert seen == [(3, 3)]
    np.testing.assert_array_equal(out.outputs["y"], [[9.0]])
    await batcher.close()


async def test_wrong_number_of_output_rows_is_a_model_error() -> None:
    async def bad(inputs: Tensors) -> Tensors:
        return {"y": inputs["x"][:1]}

    batcher = make(bad, 8)
    batcher.start()
    with pytest.raises(ModelError, match="returned 1 rows in output 'y' for a batch of 3 rows"):
        await batcher.submit(rows(0, 3), 3)
    await batcher.close()


async def test_an_idle_batcher_keeps_no_reference_to_the_last_request() -> None:
    import gc
    import weakref

    runner = FakeRunner()
    batcher = make(runner, 8)
    batcher.start()
    request = rows(0, 4)
    out = await batcher.submit(request, 4)
    refs = [weakref.ref(request["x"]), weakref.ref(out.outputs["y"].base)]
    del request, out
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    assert all(r() is None for r in refs)  # memory is given back as soon as the answer is
    await batcher.close()


async def test_a_request_larger_than_the_whole_queue_is_refused_not_shed() -> None:
    from inferd.errors import PayloadTooLarge

    batcher = make(FakeRunner(), 4, max_queue_rows=10)
    batcher.start()
    with pytest.raises(
        PayloadTooLarge, match="11 rows / 44 bytes is larger than model 'm' can ever queue"
    ):
        await batcher.submit(rows(0, 11), 11)
    await batcher.close()


async def test_a_request_past_its_deadline_is_answered_and_never_computed() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    batcher = make(runner, 1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0, 1), 1))
    while not runner.batches:
        await asyncio.sleep(0)
    with pytest.raises(RequestTimeout, match="deadline of 0 ms"):
        await batcher.submit(rows(1, 1), 1, timeout_s=0.0001)
    assert batcher.queued_rows == 0  # gone from the queue at its deadline, replica still busy
    runner.gate.set()
    await first
    await asyncio.sleep(0)
    assert runner.batches == [1]  # the expired request never reached the model
    assert batcher.queued_rows == 0
    await batcher.close()


async def test_more_urgent_requests_go_first() -> None:
    runner = FakeRunner()
    runner.gate.clear()
    batcher = make(runner, 1, priority_levels=2)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(rows(0, 1), 1))
    while not runner.batches:
        await asyncio.sleep(0)
    order: list[int] = []

    async def tracked(value: int, priority: int) -> None:
        out = await batcher.submit(rows(value, 1), 1, priority=priority)
        order.append(int(out.outputs["y"][0, 0] / 2))

    low = [asyncio.ensure_future(tracked(v, 2)) for v in (10, 11)]
    await asyncio.sleep(0)
    high = asyncio.ensure_future(tracked(20, 1))
    await asyncio.sleep(0)
    runner.gate.set()
    await asyncio.gather(first, *low, high)
    assert order == [20, 10, 11]
    await batcher.close()


async def test_the_answer_reports_queue_and_compute_time_and_batch_rows() -> None:
    batcher = make(FakeRunner(), 64)
    batcher.start()
    answers = await asyncio.gather(*(batcher.submit(rows(i, 2), 2) for i in range(3)))
    assert sum(a.batch_rows for a in answers) >= 6
    assert all(a.queue_s >= 0 and a.compute_s >= 0 for a in answers)
    await batcher.close()


async def test_padding_batches_variable_lengths_and_cuts_outputs_back() -> None:
    from inferd.batching.batcher import Padding

    seen: list[tuple[int, ...]] = []
    gate = asyncio.Event()

    async def cumsum(inputs: Tensors) -> Tensors:  # causal: position j sees positions <= j
        seen.append(inputs["x"].shape)
        await gate.wait()
        return {"y": np.cumsum(inputs["x"], axis=1)}

    config = BatcherConfig(padding=Padding({"x": (1,)}, {"y": (1,)}, {"y": "x"}))
    batcher = DynamicBatcher("m", cumsum, BatchPolicy(8), FixedCapacity(1), config)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}, 1))
    while not seen:
        await asyncio.sleep(0)
    requests = [np.arange(n, dtype=np.float32).reshape(1, n) + 1 for n in (3, 5, 4)]
    rest = [asyncio.ensure_future(batcher.submit({"x": r}, 1)) for r in requests]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*rest)
    for request, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer.outputs["y"], np.cumsum(request, axis=1))
    assert (await first).outputs["y"].shape == (1, 2)
    assert seen == [(1, 2), (3, 5)]  # the three shared one batch, padded to the longest
    await batcher.close()


async def test_a_request_that_cannot_make_its_deadline_is_shed_at_once() -> None:
    runner = FakeRunner()
    batcher = make(runner, 1)
    batcher.start()
    await batcher.submit(rows(0, 1), 1)  # learns the replica's speed
    batcher._rows_per_s = 100.0  # one row takes 10 ms
    runner.gate.clear()
    busy = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="past this request's deadline of 20 ms") as shed:
        await batcher.submit(rows(9, 1), 1, timeout_s=0.020)  # 5 queued = 50 ms of work
    assert shed.value.retry_after >= 0.05
    runner.gate.set()
    await asyncio.gather(*busy)
    await batcher.close()


async def test_admission_can_be_checked_before_a_request_is_read() -> None:
    """What the front end asks before reading a body: would any request with this deadline be
    shed? Only the queue ahead counts (the request's own rows are not known yet)."""
    runner = FakeRunner()
    batcher = make(runner, 1)
    batcher.start()
    batcher.check_admission(0.001)  # nothing queued: never refused
    await batcher.submit(rows(0, 1), 1)
    batcher._rows_per_s = 100.0  # one row takes 10 ms
    runner.gate.clear()
    busy = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="past this request's deadline of 20 ms"):
        batcher.check_admission(0.020)  # 5 rows queued = 50 ms of work > 3/4 of 20 ms
    batcher.check_admission(0.100)  # 50 ms < 75 ms: may come in
    batcher.check_admission(None)  # the default deadline, 60 s
    runner.gate.set()
    await asyncio.gather(*busy)
    assert runner.batches == [1] * 7  # checking admitted or refused nothing by itself
    await batcher.close()


async def test_a_non_idempotent_model_never_computes_a_failed_batch_again() -> None:
    runner = FakeRunner(fail_on=3.0)
    config = BatcherConfig(idempotent=False)
    batcher = DynamicBatcher("m", runner, BatchPolicy(64), FixedCapacity(1), config)
    batcher.start()
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows(0, 1), 1))
    while not runner.batches:
        await asyncio.sleep(0)
    mates = [asyncio.ensure_future(batcher.submit(rows(i, 1), 1)) for i in (2, 3)]
    await asyncio.sleep(0)
    runner.gate.set()
    await first
    results = await asyncio.gather(*mates, return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)
    assert runner.batches == [1, 2]  # the failed batch of two ran once, never again
    await batcher.close()
