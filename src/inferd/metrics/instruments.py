"""The fixed label values, the bucket bounds, and a lock-free histogram for the hot path.

Every label value comes from a fixed tuple below (or is a model name or a small integer
priority), so a caller cannot blow up the number of series with free text.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.utils import floatToGoString

OUTCOMES = ("success", "client_error", "model_error", "timeout", "shed", "unavailable", "cancelled")
# Outcomes of requests that never waited in a queue: no queue time is observed for them.
NEVER_QUEUED = frozenset({"client_error", "shed", "unavailable"})
RESTART_REASONS = ("crash", "unhealthy", "timeout", "other")
SCALING_DIRECTIONS = ("up", "down")
SCALING_REASONS = ("load", "queue", "slo", "idle", "bounds", "cold_start", "manual")

# 100 µs to 30 s, about three buckets per decade.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(11))  # 1, 2, 4, ..., 1024 rows


class Histogram:
    """Bucket counts and a sum, made cumulative only when read.

    No lock: prometheus_client's histogram takes two locks and scans every bucket per
    observation (about 2 µs); here one writer (the event loop) bisects (about 0.3 µs). A scrape
    from another thread may see ``sum`` one observation apart from the counts.
    """

    __slots__ = ("_bounds", "_counts", "_labels", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        # The ``le`` labels exactly as prometheus_client writes them (untyped upstream).
        self._labels = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it (Prometheus ``le``)."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self._counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as Prometheus exposes them."""
        total = 0
        out: list[tuple[str, float]] = []
        for label, n in zip(self._labels, self._counts, strict=True):
            total += n
            out.append((label, total))
        return out
