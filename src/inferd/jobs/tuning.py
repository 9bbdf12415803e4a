"""The batch size that maximises throughput, found by measuring: pure, time from a clock.

A hill climb over powers of two: measure the starting size, then double while doubling pays:
a size becomes the best only if it is at least ``min_gain`` faster than the best so far, and the
climb stops after ``patience`` sizes in a row that are not (one slow measurement on a busy
machine does not end it). If the climb up never beat the start, it goes down from the start the
same way. Each trial computes enough rows to last about ``trial_s`` at the speed measured so far,
and at least ``min_batches`` batches, after one batch of that size that is not measured (the first
batch of a new shape pays one-off costs: kernel selection, allocation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inferd.clock import Clock


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """The sizes to try and how long to measure each."""

    candidates: tuple[int, ...]
    """Ascending batch sizes."""
    start: int
    """The size measured first (one of the candidates)."""
    min_gain: float = 0.03
    patience: int = 2
    trial_s: float = 0.5
    min_batches: int = 2
    max_trial_rows: int = 1 << 16

    def __post_init__(self) -> None:
        if not self.candidates or list(self.candidates) != sorted(set(self.candidates)):
            raise ValueError(f"candidates {self.candidates}: expected distinct ascending sizes")
        if self.start not in self.candidates:
            raise ValueError(f"start {self.start} is not one of {self.candidates}")


def powers_of_two(low: int, high: int, divides: int | None = None) -> tuple[int, ...]:
    """Powers of two in ``[low, high]`` (that divide ``divides``, if given)."""
    sizes = []
    size = 1
    while size <= high:
        if size >= low and (divides is None or divides % size == 0):
            sizes.append(size)
        size *= 2
    return tuple(sizes)


def nearest(candidates: tuple[int, ...], size: int) -> int:
    """The candidate closest to ``size`` on a log scale."""
    return min(candidates, key=lambda c: abs(math.log2(c) - math.log2(max(size, 1))))


@dataclass(frozen=True, slots=True)
class Trial:
    """Compute ``rows`` rows in batches of ``size``; ``measured`` False for the warm-up."""

    size: int
    rows: int
    measured: bool = True


@dataclass(slots=True)
class _Climb:
    index: int
    direction: int = 1
    best: int | None = None
    misses: int = 0
    turned: bool = False
    rates: dict[int, float] = field(default_factory=dict)


class BatchSizeSearch:
    """Proposes trials and, once they are measured, the best batch size."""

    def __init__(self, config: SearchConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._climb = _Climb(config.candidates.index(config.start))
        self._warmed: set[int] = set()
        self._started: float | None = None
        self._done = False

    @property
    def rates(self) -> dict[int, float]:
        """Rows per second measured at each size tried."""
        return dict(self._climb.rates)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def best(self) -> int:
        """The fastest size measured (the start before any measurement)."""
        best = self._climb.best
        return best if best is not None else self.config.start

    def next_trial(self) -> Trial | None:
        """What to compute next; None once the search has decided."""
        if self._done:
            return None
        size = self.config.candidates[self._climb.index]
        if size not in self._warmed:
            return Trial(size, size, measured=False)
        best_rate = max(self._climb.rates.values(), default=0.0)
        wanted = best_rate * self.config.trial_s
        batches = max(self.config.min_batches, math.ceil(wanted / size))
        batches = min(batches, max(1, self.config.max_trial_rows // size))
        return Trial(size, size * batches)

    def begin(self) -> None:
        """The trial just proposed starts now."""
        self._started = self._clock.now()

    def finish(self, trial: Trial) -> None:
        """The trial has computed its rows; record its speed and choose the next one."""
        if self._started is None:
            raise RuntimeError("finish() without begin()")
        elapsed = max(self._clock.now() - self._started, 1e-9)
        self._started = None
        if not trial.measured:
            self._warmed.add(trial.size)
            return
        self._record(trial.size, trial.rows / elapsed)

    def _record(self, size: int, rate: float) -> None:
        climb = self._climb
        climb.rates[size] = rate
        best_rate = climb.rates[climb.best] if climb.best is not None else 0.0
        if climb.best is None or rate > best_rate * (1 + self.config.min_gain):
            climb.best, climb.misses = size, 0
        else:
            climb.misses += 1
        if climb.misses < self.config.patience and self._step():
            return
        self._turn_or_stop()

    def _step(self) -> bool:
        """Move to the next size in the climb's direction; False past the last one."""
        climb = self._climb
        index = climb.index + climb.direction
        while 0 <= index < len(self.config.candidates):
            if self.config.candidates[index] not in climb.rates:
                climb.index = index
                return True
            index += climb.direction
        return False

    def _turn_or_stop(self) -> None:
        climb = self._climb
        if climb.direction == 1 and not climb.turned and climb.best == self.config.start:
            climb.direction, climb.turned, climb.misses = -1, True, 0
            climb.index = self.config.candidates.index(self.config.start)
            if self._step():
                return
        self._done = True
