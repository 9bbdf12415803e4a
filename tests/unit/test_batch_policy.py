"""The batch policy: pure functions driven with explicit times."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from inferd.batching.policy import BatchPolicy, split_rows, take_batch


def test_full_batch_goes_at_once() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)
    assert policy.wait_before_dispatch(pending_rows=8, oldest_arrival=0.0, now=0.0) == 0.0


def test_partial_batch_waits_until_the_oldest_has_waited_the_delay() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.010)
    assert abs(policy.wait_before_dispatch(3, 1.000, 1.004) - 0.006) < 1e-12
    assert policy.wait_before_dispatch(3, 1.000, 1.010) == 0.0
    assert policy.wait_before_dispatch(3, 1.000, 1.500) == 0.0


def test_zero_delay_never_waits() -> None:
    policy = BatchPolicy(max_batch_size=64)
    assert policy.wait_before_dispatch(1, oldest_arrival=5.0, now=5.0) == 0.0


def test_take_batch_respects_rows_and_keys() -> None:
    # rows:      4    4    2    1    8
    # keys:      a    a    b    a    a
    chosen = take_batch([4, 4, 2, 1, 8], ["a", "a", "b", "a", "a"], max_rows=9)
    assert chosen == [0, 1, 3]


def test_the_oldest_request_always_goes_even_if_alone() -> None:
    assert take_batch([5, 1], ["x", "x"], max_rows=5) == [0]


@given(
    st.lists(st.tuples(st.integers(1, 16), st.sampled_from("abc")), min_size=1, max_size=40),
    st.integers(16, 64),
)
def test_take_batch_invariants(items: list[tuple[int, str]], max_rows: int) -> None:
    rows = [r for r, _ in items]
    keys = [k for _, k in items]
    chosen = take_batch(rows, keys, max_rows)
    assert chosen[0] == 0
    assert chosen == sorted(set(chosen))  # in arrival order, no duplicates
    assert sum(rows[i] for i in chosen) <= max_rows
    assert all(keys[i] == keys[0] for i in chosen)
    # Greedy: nothing left out that would still have fitted at its turn.
    total = 0
    for i in range(len(rows)):
        if i in chosen:
            total += rows[i]
        elif keys[i] == keys[0] and total + rows[i] <= max_rows and total < max_rows:
            raise AssertionError(f"request {i} fitted but was left out")


@given(st.integers(1, 1000), st.integers(1, 100))
def test_split_rows_covers_every_row_once(rows: int, max_rows: int) -> None:
    pieces = split_rows(rows, max_rows)
    assert pieces[0][0] == 0 and pieces[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(0 < stop - start <= max_rows for start, stop in pieces)
