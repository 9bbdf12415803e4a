"""Percentiles, summaries and goodput counting of ``inferd bench`` (nearest rank)."""

from __future__ import annotations

import math

import pytest

from inferd.bench.stats import count_within, percentile, summarize


def test_nearest_rank_percentiles_of_one_to_a_thousand() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 50) == 500
    assert percentile(values, 90) == 900
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000


def test_a_percentile_is_always_a_value_that_was_seen() -> None:
    values = [1.0, 2.0, 10.0, 11.0]
    assert percentile(values, 50) == 2.0  # not 6.0, the interpolated middle
    assert percentile(values, 0.1) == 1.0
    assert percentile([7.0], 99.9) == 7.0


def test_summary_of_unsorted_values() -> None:
    summary = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "p99.9": 5.0, "mean": 3.0, "max": 5.0}


def test_summary_of_nothing_is_all_nan() -> None:
    summary = summarize([])
    assert set(summary) == {"p50", "p90", "p99", "p99.9", "mean", "max"}
    assert all(math.isnan(v) for v in summary.values())


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 0), (2.0, 2), (2.5, 2), (10.0, 4)])
def test_count_within_includes_the_limit(limit: float, expected: int) -> None:
    assert count_within([1.0, 2.0, 3.0, 4.0], limit) == expected
