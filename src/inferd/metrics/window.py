"""A sliding window of the last W seconds: a ring of per-second buckets (pure: times are passed in).

The window at time ``now`` holds the events whose second ``floor(t)`` is one of the last ``W``
seconds, the current one included: ``t >= floor(now) - W + 1``. It therefore covers between
``W - 1`` and ``W`` seconds of history; ``span(now)`` says exactly how much, so that a rate is
``total / span`` and does not saw-tooth as the current second fills up. Memory is ``W`` slots,
whatever the request rate.
"""

from __future__ import annotations

import math


class SlidingWindow:
    """Sums of values added in the last ``window_s`` whole seconds (per-second ring buckets)."""

    __slots__ = ("_counts", "_n", "_seconds", "_start")

    def __init__(self, window_s: int, start: float) -> None:
        if window_s < 1:
            raise ValueError(f"window_s = {window_s}: expected an integer >= 1 (seconds)")
        self._n = window_s
        self._start = start  # nothing happened before this: a young window is not diluted
        self._counts = [0.0] * window_s
        # The absolute second each slot holds; a slot holding an older second is stale.
        self._seconds = [-(2**62)] * window_s

    @property
    def window_s(self) -> int:
        """The window's length in seconds."""
        return self._n

    def add(self, now: float, value: float = 1.0) -> None:
        """Add ``value`` at time ``now`` (times must not go backwards)."""
        second = math.floor(now)
        slot = second % self._n
        if self._seconds[slot] == second:
            self._counts[slot] += value
        else:  # the slot held a second that has left the window: reuse it
            self._seconds[slot] = second
            self._counts[slot] = value

    def total(self, now: float) -> float:
        """Sum of the values added in the window ending at ``now``."""
        oldest = math.floor(now) - self._n + 1
        return sum(c for c, s in zip(self._counts, self._seconds, strict=True) if s >= oldest)

    def begin(self, now: float) -> float:
        """When the window ending at ``now`` begins (never before the window's start)."""
        return max(float(math.floor(now) - self._n + 1), self._start)

    def span(self, now: float) -> float:
        """Seconds the window ending at ``now`` covers; at least 1 s so a rate stays finite."""
        return max(now - self.begin(now), 1.0)

    def rate(self, now: float) -> float:
        """Values per second over the window ending at ``now``."""
        return self.total(now) / self.span(now)
