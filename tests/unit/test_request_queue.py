"""The request queue: priorities, bounds, and which requests make a batch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.batching.queue import Entry, QueueLimits, RequestQueue
from inferd.errors import Overloaded, PayloadTooLarge


def entry(rows: int, key: str = "a", priority: int = 1, nbytes: int = 0, t: float = 0.0) -> Entry:
    return Entry(rows=rows, nbytes=nbytes or rows * 4, key=key, arrival=t, priority=priority)


def test_take_respects_rows_and_keys() -> None:
    q = RequestQueue("m", QueueLimits())
    items = [entry(4), entry(4), entry(2, "b"), entry(1), entry(8)]
    q.push(items)
    batch = q.take(max_rows=9, max_bytes=10**9)
    assert batch == [items[0], items[1], items[3]]
    assert q.rows == 10 and len(q) == 2


def test_the_head_goes_even_when_larger_than_the_byte_budget() -> None:
    q = RequestQueue("m", QueueLimits())
    big = entry(1, nbytes=1000)
    q.push([big, entry(1, nbytes=10)])
    assert q.take(max_rows=8, max_bytes=100) == [big]


def test_urgent_levels_lead_and_fill_first() -> None:
    q = RequestQueue("m", QueueLimits(priority_levels=3))
    low, mid, high = entry(1, priority=3), entry(1, priority=2), entry(1, priority=1)
    q.push([low])
    q.push([mid])
    q.push([high])
    assert q.take(max_rows=2, max_bytes=10**9) == [high, mid]


def test_bounds_shed_with_retry_after_and_refuse_what_never_fits() -> None:
    q = RequestQueue("m", QueueLimits(max_rows=10, max_bytes=100))
    q.push([entry(8, nbytes=50)])
    with pytest.raises(Overloaded) as shed:
        q.push([entry(3, nbytes=10)])
    assert shed.value.retry_after > 0
    with pytest.raises(Overloaded):
        q.push([entry(1, nbytes=60)])
    with pytest.raises(PayloadTooLarge):
        q.check_fits(11, 1)
    with pytest.raises(PayloadTooLarge):
        q.check_fits(1, 101)


@given(
    st.lists(st.tuples(st.integers(1, 16), st.sampled_from("ab"), st.integers(1, 3)), max_size=40)
)
def test_take_and_remove_keep_the_counters_true(items: list[tuple[int, str, int]]) -> None:
    q = RequestQueue("m", QueueLimits(max_rows=10**6, priority_levels=3))
    for rows, key, priority in items:
        q.push([entry(rows, key, priority)])
    taken = q.take(max_rows=20, max_bytes=10**9)
    if items:
        assert taken and all(e.key == taken[0].key for e in taken)
        assert taken[0].priority == min(p for _, _, p in items)
        assert sum(e.rows for e in taken) <= max(20, taken[0].rows)
    assert q.rows == sum(e.rows for e in q)
    assert q.nbytes == sum(e.nbytes for e in q)
    assert len(q) == len(items) - len(taken)
