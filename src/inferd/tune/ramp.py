"""How a trial finds a configuration's capacity under the target: a closed-loop concurrency ramp.

Concurrency doubles from a start (1, or a guess from earlier trials) while p99 stays under the
target and throughput still grows, and halves while it does not meet it; the first step that
breaks the target above a good one is refined once, halfway back to that good step. The
operating point is the good step with the highest throughput. Closed loop needs no guess of the
capacity up front (an open-loop rate would), and the concurrency it settles on is what
``inferd bench --concurrency`` reproduces. Pure: steps are measured by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inferd.tune.measurement import LoadPoint, Measurement


@dataclass(frozen=True, slots=True)
class Ramp:
    """The load steps of one trial, decided from the steps measured so far."""

    slo_p99_ms: float
    max_concurrency: int = 64
    min_gain: float = 0.05
    """A step that adds less throughput than this fraction means the server is saturated."""
    start: int = 1
    """The first step's concurrency: a guess from earlier trials saves the climb from 1."""
    headroom: float = 0.1
    """A step meets the target when p99 <= (1 - headroom) * target: a margin for the noise of a
    later measurement of the same configuration."""

    def __post_init__(self) -> None:
        if not (self.slo_p99_ms > 0 and math.isfinite(self.slo_p99_ms)):
            raise ValueError(f"slo_p99_ms = {self.slo_p99_ms}: expected a number > 0")
        if self.start < 1:
            raise ValueError(f"start = {self.start}: expected >= 1")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency = {self.max_concurrency}: expected >= 1")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"headroom = {self.headroom}: expected 0 <= headroom < 1")

    @property
    def limit_ms(self) -> float:
        """The p99 a step may reach and still meet the target."""
        return self.slo_p99_ms * (1 - self.headroom)

    def meets(self, point: LoadPoint) -> bool:
        """Whether a step met the target: answers, none failed, p99 within the limit."""
        return point.num_errors == 0 and point.num_ok > 0 and point.p99_ms <= self.limit_ms

    def next_concurrency(self, points: Sequence[LoadPoint]) -> int | None:
        """The next step's concurrency, or None when the ramp is over."""
        if not points:
            return min(self.start, self.max_concurrency)
        good = [p for p in points if self.meets(p)]
        if not good:
            lowest = min(p.concurrency for p in points)
            return lowest // 2 if lowest > 1 else None  # down until a step meets the target
        top = max(good, key=lambda p: p.concurrency)
        above = [p.concurrency for p in points if p.concurrency > top.concurrency]
        if above:
            return self._refine(points, top.concurrency, min(above))
        return self._climb(good, top)

    def _climb(self, good: Sequence[LoadPoint], top: LoadPoint) -> int | None:
        if top.concurrency >= self.max_concurrency:
            return None
        below = max((p.throughput for p in good if p.concurrency < top.concurrency), default=0.0)
        if below > 0 and top.throughput < below * (1 + self.min_gain):
            return None  # saturated: more clients would only queue
        return min(top.concurrency * 2, self.max_concurrency)

    def _refine(self, points: Sequence[LoadPoint], good: int, bad: int) -> int | None:
        """Once per trial, halfway between the highest good step and the failed one above it."""
        ladder = self._ladder()
        if any(p.concurrency not in ladder for p in points):
            return None  # the one refinement is spent
        middle = (good + bad) // 2
        return middle if middle not in (good, bad) else None

    def _ladder(self) -> set[int]:
        """The concurrencies reached by doubling or halving from the start."""
        ladder, c = {self.max_concurrency}, min(self.start, self.max_concurrency)
        while c >= 1:
            ladder.add(c)
            c //= 2
        c = min(self.start, self.max_concurrency)
        while c < self.max_concurrency:
            c *= 2
            ladder.add(min(c, self.max_concurrency))
        return ladder

    def operating_point(self, points: Sequence[LoadPoint]) -> LoadPoint | None:
        """The step meeting the target with the highest throughput (the lower load on a tie)."""
        good = [p for p in points if self.meets(p)]
        if not good:
            return None
        return max(good, key=lambda p: (p.throughput, -p.concurrency))

    def measurement(self, points: Sequence[LoadPoint], memory_mb: float) -> Measurement:
        """The trial's outcome from its steps."""
        best = self.operating_point(points)
        if best is not None:
            return Measurement(
                best.throughput, best.p99_ms, memory_mb, best.concurrency, (*points,)
            )
        lightest = min(points, key=lambda p: p.concurrency, default=None)
        error = None
        if lightest is None:
            error = "no load step ran"
        elif lightest.num_ok == 0:
            error = (
                f"all {lightest.num_errors} requests failed at concurrency {lightest.concurrency}"
            )
        p99 = lightest.p99_ms if lightest is not None and lightest.num_ok else math.inf
        return Measurement(0.0, p99, memory_mb, 0, (*points,), error)


def start_guess(done: Iterable[tuple[int, Measurement]], replicas: int) -> int:
    """Where a trial's ramp starts: half the operating concurrency of the best trial so far
    (``done`` holds each finished trial's replicas and measurement), scaled to ``replicas`` and
    floored to a power of two; 1 when no trial has met the target yet."""
    met = [(m.throughput, m.concurrency, r) for r, m in done if m.meets_slo]
    if not met:
        return 1
    _, concurrency, best_replicas = max(met)
    guess = max(1, concurrency * replicas // (2 * best_replicas))
    return 1 << (guess.bit_length() - 1)
