"""When to dispatch a batch and how large it may be: pure, time passed in.

``BatchPolicy`` is the fixed-delay policy Triton users know: a batch leaves as soon as it is
full or reaches a preferred size, or when it has waited ``max_queue_delay`` to fill. At low load
a request goes out at once (delay 0 by default); under load batches fill while the replicas are
busy. ``slo.SloController`` is the alternative that picks the delay from a target.

The delay counts from the later of the oldest request's arrival and the moment a replica came
free for the batch (``free_since``); Triton counts from the arrival alone. Under sustained load
the difference decides the batch size: requests that queued behind a busy replica have already
waited out any small delay, so with arrival-time counting the next batch leaves with whatever
queued during the last one. Closed-loop clients then stay split into cohorts (64 clients, one
replica: two alternating batches of 32, never one of 64), and the delay a user set to get fuller
batches does nothing exactly when load is high. Counted from the free replica, the delay is what
its name promises: the longest a free replica idles for a batch to fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class DispatchPolicy(Protocol):
    """When to send a batch and how many rows it may hold."""

    def max_rows(self) -> int: ...

    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> float: ...

    def take_rows(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> int: ...

    def on_arrival(self, now: float, rows: int) -> None: ...

    def on_batch_done(self, rows: int, compute_s: float) -> None: ...

    def on_request_done(self, total_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Size and delay limits of one model's batches."""

    max_batch_size: int
    """Most rows in one batch (>= 1)."""
    max_queue_delay_s: float = 0.0
    """Longest a free replica waits for its batch to fill (see the module's docstring)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Sizes worth dispatching at once, without waiting out the delay."""

    def max_rows(self) -> int:
        return self.max_batch_size

    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> float:
        """Seconds to keep waiting for more rows; 0.0 means dispatch now.

        ``free_since``: when the replica this batch will run on came free (the batcher's clock).
        """
        if pending_rows >= self.max_batch_size:
            return 0.0
        if any(size <= pending_rows for size in self.preferred_batch_sizes):
            return 0.0
        return max(0.0, max(oldest_arrival, free_since) + self.max_queue_delay_s - now)

    def take_rows(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> int:
        """How many rows the batch dispatched now takes.

        Before the delay runs out, a preferred size is taken exactly (the largest that is
        pending): models compiled for fixed sizes are why users configure them.
        """
        if pending_rows >= self.max_batch_size or not self.preferred_batch_sizes:
            return self.max_batch_size
        if now >= max(oldest_arrival, free_since) + self.max_queue_delay_s:
            return self.max_batch_size
        fitting = [size for size in self.preferred_batch_sizes if size <= pending_rows]
        return max(fitting) if fitting else self.max_batch_size

    def on_arrival(self, now: float, rows: int) -> None:
        """Fixed policies learn nothing from traffic."""

    def on_batch_done(self, rows: int, compute_s: float) -> None:
        """Fixed policies learn nothing from traffic."""

    def on_request_done(self, total_s: float) -> None:
        """Fixed policies learn nothing from traffic."""


def split_rows(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges that cut a request of ``rows`` rows into batch-sized pieces."""
    return [(start, min(start + max_rows, rows)) for start in range(0, rows, max_rows)]
