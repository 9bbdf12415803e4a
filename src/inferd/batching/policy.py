"""When to dispatch a batch and what goes in it: pure functions, no I/O, time passed in.

The batcher calls ``wait_before_dispatch`` once a runner is free. A batch leaves as soon as it is
full, or when its oldest request has waited ``max_queue_delay`` — so at low load a request goes
out at once (delay 0 by default) and under load batches fill while the runners are busy.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Size and delay limits of one model's batches."""

    max_batch_size: int
    """Most rows in one batch (>= 1)."""
    max_queue_delay_s: float = 0.0
    """Longest the oldest request waits for a batch to fill once a runner is free."""

    def wait_before_dispatch(self, pending_rows: int, oldest_arrival: float, now: float) -> float:
        """Seconds to keep waiting for more rows; 0.0 means dispatch now."""
        if pending_rows >= self.max_batch_size:
            return 0.0
        return max(0.0, oldest_arrival + self.max_queue_delay_s - now)


def take_batch(rows: Sequence[int], keys: Sequence[Hashable], max_rows: int) -> list[int]:
    """Indices of queued requests to put in the next batch.

    Starts with the oldest request and adds, in arrival order, those whose inputs can be stacked
    with it (same ``key``: same dtypes and non-batch dims) while the batch stays within
    ``max_rows``. Later requests may overtake one that does not fit, so a large request never
    blocks small ones behind it; the oldest request always goes.
    """
    if not rows:
        return []
    chosen = [0]
    total = rows[0]
    for i in range(1, len(rows)):
        if total >= max_rows:
            break
        if keys[i] == keys[0] and total + rows[i] <= max_rows:
            chosen.append(i)
            total += rows[i]
    return chosen


def split_rows(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges that cut a request of ``rows`` rows into batch-sized pieces."""
    return [(start, min(start + max_rows, rows)) for start in range(0, rows, max_rows)]
