"""Replica choice: least outstanding first, equals in turn, never an unavailable replica."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.replicas.router import Router, least_busy

ALL = [True, True, True]


def test_least_outstanding_wins() -> None:
    assert Router().choose([3, 1, 2], ALL) == 1
    assert least_busy([3, 1, 2], ALL) == 1


def test_ties_rotate() -> None:
    router = Router()
    assert [router.choose([0, 0, 0], ALL) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_ties_rotate_among_the_least_busy_only() -> None:
    router = Router()
    picks = [router.choose([1, 0, 5, 0], [True] * 4) for _ in range(4)]
    assert picks == [1, 3, 1, 3]


def test_unhealthy_and_draining_replicas_are_never_chosen() -> None:
    assert least_busy([0, 0, 9], [False, False, True]) == 2
    router = Router()
    assert {router.choose([0, 0, 0], [False, True, False]) for _ in range(5)} == {1}


def test_none_when_none_is_available() -> None:
    assert Router().choose([], []) is None
    assert Router().choose([0, 0], [False, False]) is None
    assert least_busy([0, 0], [False, False]) is None


def test_start_picks_where_ties_begin() -> None:
    every = [True] * 4
    assert least_busy([0, 0, 0, 0], every) == 0
    assert least_busy([0, 0, 0, 0], every, start=2) == 2
    assert least_busy([5, 0, 5, 0], every, start=2) == 3
    assert least_busy([5, 0, 5, 0], every, start=0) == 1


def test_the_router_survives_a_shrinking_pool() -> None:
    router = Router()
    for _ in range(5):
        router.choose([0] * 5, [True] * 5)
    assert router.choose([0, 0], [True, True]) in (0, 1)


def test_mismatched_lengths_are_a_bug() -> None:
    with pytest.raises(ValueError):
        least_busy([0, 0], [True])


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=12),
    st.integers(0, 20),
)
def test_the_choice_is_an_available_least_busy_replica(
    replicas: list[tuple[int, bool]], start: int
) -> None:
    outstanding = [count for count, _ in replicas]
    index = least_busy(outstanding, [ok for _, ok in replicas], start)
    available = [i for i, (_, ok) in enumerate(replicas) if ok]
    if not available:
        assert index is None
    else:
        assert index in available
        assert outstanding[index] == min(outstanding[i] for i in available)


@given(
    st.lists(st.booleans(), min_size=1, max_size=10).filter(any),
    st.integers(0, 3),
    st.integers(1, 200),
)
def test_equal_load_is_shared_evenly(available: list[bool], load: int, calls: int) -> None:
    router = Router()
    outstanding = [load] * len(available)
    counts = Counter(router.choose(outstanding, available) for _ in range(calls))
    assert set(counts) <= {i for i, ok in enumerate(available) if ok}
    per_replica = [counts[i] for i, ok in enumerate(available) if ok]
    assert max(per_replica) - min(per_replica) <= 1
