"""When to dispatch a batch and how large it may be: pure, time passed in.

``BatchPolicy`` is the fixed-delay policy Triton users know: a batch leaves as soon as it is
full or reaches a preferred size, or when its oldest request has waited ``max_queue_delay``.
At low load a request goes out at once (delay 0 by default); under load batches fill while the
replicas are busy. ``slo.SloController`` is the alternative that picks the delay from a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DispatchPolicy(Protocol):
    """When to send a batch and how many rows it may hold."""

    def max_rows(self) -> int: ...

    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float
    ) -> float: ...

    def take_rows(self, pending_rows: int, oldest_arrival: float, now: float) -> int: ...

    def on_arrival(self, now: float, rows: int) -> None: ...

    def on_batch_done(self, rows: int, compute_s: float) -> None: ...

    def on_request_done(self, total_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Size and delay limits of one model's batches."""

    max_batch_size: int
    """Most rows in one batch (>= 1)."""
    max_queue_delay_s: float = 0.0
    """Longest the oldest request waits for a batch to fill once a replica is free."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Sizes worth dispatching at once, without waiting out the delay."""

    def max_rows(self) -> int:
        return self.max_batch_size

    def wait_before_dispatch(self, pending_rows: int, oldest_arrival: float, now: float) -> float:
        """Seconds to keep waiting for more rows; 0.0 means dispatch now."""
        if pending_rows >= self.max_batch_size:
            return 0.0
        if any(size <= pending_rows for size in self.preferred_batch_sizes):
            return 0.0
        return max(0.0, oldest_arrival + self.max_queue_delay_s - now)

    def take_rows(self, pending_rows: int, oldest_arrival: float, now: float) -> int:
        """How many rows the batch dispatched now takes.

        Before the delay runs out, a preferred size is taken exactly (the largest that is
        pending): models compiled for fixed sizes are why users configure them.
        """
        if pending_rows >= self.max_batch_size or not self.preferred_batch_sizes:
            return self.max_batch_size
        if now >= oldest_arrival + self.max_queue_delay_s:
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
