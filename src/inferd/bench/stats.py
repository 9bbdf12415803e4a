"""Latency summaries: nearest-rank percentiles, mean and max (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

QUANTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of sorted values; NaN when empty.

    Nearest rank, not interpolation: every reported latency is one a request really saw.
    """
    if not ordered:
        return math.nan
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, not 999.
    rank = math.ceil(round(q / 100.0 * len(ordered), 9))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9, mean and max of ``values`` (all NaN when there are none)."""
    ordered = sorted(values)
    summary = {name: percentile(ordered, q) for name, q in QUANTILES}
    summary["mean"] = math.fsum(ordered) / len(ordered) if ordered else math.nan
    summary["max"] = ordered[-1] if ordered else math.nan
    return summary


def count_within(values: Sequence[float], limit: float) -> int:
    """How many values are at most ``limit``."""
    return sum(1 for v in values if v <= limit)
