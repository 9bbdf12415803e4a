"""The batch policy: pure functions driven with explicit times."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from inferd.batching.policy import BatchPolicy, split_rows


def test_full_batch_goes_at_once() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)
    assert policy.wait_before_dispatch(pending_rows=8, oldest_arrival=0.0, now=0.0) == 0.0


def test_partial_batch_waits_until_the_oldest_has_waited_the_delay() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)
    assert abs(policy.wait_before_dispatch(3, 1.000, 1.004) - 0.006) < 1e-12
    assert policy.wait_before_dispatch(3, 1.000, 1.010) == 0.0
    assert policy.wait_before_dispatch(3, 1.000, 1.500) == 0.0


def test_the_delay_counts_from_when_a_replica_came_free_if_that_is_later() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)
    # Queued at 1.000 behind a busy replica that came free at 1.050: the batch may still wait
    # for rows until 1.060, although its oldest request has waited past the delay.
    assert abs(policy.wait_before_dispatch(3, 1.000, 1.050, free_since=1.050) - 0.010) < 1e-12
    assert abs(policy.wait_before_dispatch(3, 1.000, 1.055, free_since=1.050) - 0.005) < 1e-12
    assert policy.wait_before_dispatch(3, 1.000, 1.060, free_since=1.050) == 0.0
    # A replica free before the request arrived changes nothing: the arrival counts.
    assert abs(policy.wait_before_dispatch(3, 1.000, 1.004, free_since=0.5) - 0.006) < 1e-12
    # A full batch never waits.
    assert policy.wait_before_dispatch(8, 1.000, 1.050, free_since=1.050) == 0.0


@given(
    st.integers(1, 64),
    st.floats(0.0, 0.1),
    st.floats(0.0, 10.0),
    st.floats(0.0, 10.0),
    st.floats(0.0, 10.0),
)
def test_a_free_replica_never_idles_longer_than_the_delay(
    pending: int, delay: float, arrival: float, free: float, elapsed: float
) -> None:
    policy = BatchPolicy(max_batch_size=64, max_queue_delay_s=delay)
    start = max(arrival, free)
    wait = policy.wait_before_dispatch(pending, arrival, start + elapsed, free_since=free)
    assert 0.0 <= wait <= delay + 1e-9
    assert elapsed + wait <= delay + 1e-9 or wait == 0.0


def test_zero_delay_never_waits() -> None:
    policy = BatchPolicy(max_batch_size=64)
    assert policy.wait_before_dispatch(1, oldest_arrival=5.0, now=5.0) == 0.0


def test_preferred_sizes_dispatch_early_and_are_taken_exactly() -> None:
    policy = BatchPolicy(max_batch_size=16, max_queue_delay_s=0.010, preferred_batch_sizes=(4, 8))
    assert policy.wait_before_dispatch(3, oldest_arrival=0.0, now=0.0) > 0
    assert policy.wait_before_dispatch(6, oldest_arrival=0.0, now=0.0) == 0.0
    assert policy.take_rows(6, oldest_arrival=0.0, now=0.0) == 4
    assert policy.take_rows(9, oldest_arrival=0.0, now=0.0) == 8
    # once the delay has run out, everything pending goes
    assert policy.take_rows(6, oldest_arrival=0.0, now=0.011) == 16


@given(st.integers(1, 1000), st.integers(1, 100))
def test_split_rows_covers_every_row_once(rows: int, max_rows: int) -> None:
    pieces = split_rows(rows, max_rows)
    assert pieces[0][0] == 0 and pieces[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(0 < stop - start <= max_rows for start, stop in pieces)
