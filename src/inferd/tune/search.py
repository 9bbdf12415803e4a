"""The search: the configuration with the highest throughput that meets the p99 target and the
memory budget, found in far fewer trials than a grid. Pure: trials run through an injected
``evaluate``, so the search never sees a server and is tested on a fake model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from inferd.tune.measurement import Measurement
from inferd.tune.space import Candidate, Dimension, SearchSpace

Evaluate = Callable[[Candidate], Measurement]
PHI: Final = (1 + math.sqrt(5)) / 2
MAX_PASSES: Final = 2
MAX_MISSES: Final = 2
"""Replica counts in a row that miss the target before the walk gives up: one more count is
tried, since replicas share the cores and fewer threads each can change a batch's latency."""


@dataclass(frozen=True, slots=True)
class Objective:
    """What makes a configuration acceptable, and how two are compared."""

    slo_p99_ms: float
    memory_budget_mb: float | None = None
    tie: float = 0.03
    """Throughputs closer than this fraction are a tie (measurement noise): the cheaper wins."""

    def fits_memory(self, m: Measurement) -> bool:
        """Whether the trial's memory is within the budget (always, without one)."""
        return self.memory_budget_mb is None or m.memory_mb <= self.memory_budget_mb

    def meets_slo(self, m: Measurement) -> bool:
        """Whether the trial found an operating point with p99 within the target."""
        return m.meets_slo and m.p99_ms <= self.slo_p99_ms

    def feasible(self, m: Measurement) -> bool:
        """Meets the target and fits the memory budget."""
        return self.meets_slo(m) and self.fits_memory(m)

    def score(self, m: Measurement) -> tuple[int, float]:
        """Feasible beats over-memory beats too-slow beats failed; then throughput, memory or
        p99 decide within each class."""
        if m.error is not None:
            return (0, 0.0)
        if not self.meets_slo(m):
            return (1, -m.p99_ms)
        if not self.fits_memory(m):
            return (2, -m.memory_mb)
        return (3, m.throughput)

    def better(self, a: Measurement, b: Measurement) -> bool:
        """Whether ``a`` beats ``b`` by more than the noise."""
        score_a, score_b = self.score(a), self.score(b)
        if score_a[0] != score_b[0]:
            return score_a[0] > score_b[0]
        if score_a[0] == 3:
            return a.throughput > b.throughput * (1 + self.tie)
        return score_a[1] > score_b[1]


@dataclass(frozen=True, slots=True)
class Trial:
    """One configuration tried and what it measured."""

    candidate: Candidate
    measurement: Measurement


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Every trial in the order tried, the chosen one, and the size of the grid avoided."""

    trials: tuple[Trial, ...]
    best: Trial | None
    """The recommendation; None when no trial was feasible."""
    grid_size: int
    complete: bool
    """False when the trial budget ran out before the search finished."""


class _BudgetSpent(Exception):
    """The trial budget is spent: the search stops with what it has."""


class _Trials:
    """Every evaluation goes through here: each candidate is measured once, within the budget."""

    def __init__(self, evaluate: Evaluate, max_trials: int | None) -> None:
        self._evaluate = evaluate
        self._max = max_trials
        self.done: dict[Candidate, Measurement] = {}

    def measure(self, candidate: Candidate) -> Measurement:
        if candidate in self.done:
            return self.done[candidate]
        if self._max is not None and len(self.done) >= self._max:
            raise _BudgetSpent
        self.done[candidate] = self._evaluate(candidate)
        return self.done[candidate]


def search(
    space: SearchSpace,
    objective: Objective,
    evaluate: Evaluate,
    max_trials: int | None = None,
) -> SearchResult:
    """Search ``space`` for the best configuration under ``objective``.

    The outermost dimension (replicas) is walked upwards; for each value, the inner dimensions
    (batch size, then queue delay) are searched one at a time, the others held at their best so
    far (a second pass when a later dimension moved). At the first replica count each line is
    searched by a discrete golden-section search: throughput under a latency target rises with
    the batch size until the target caps the batch, then flattens, so the line is unimodal and
    takes about log_φ(n) trials instead of n. At the next counts the best moves little, so each
    line is hill-climbed from the previous count's best (two or three trials). The walk up the
    replicas stops at the first count over the memory budget (more replicas only add memory),
    at the first that adds no throughput beyond the noise, or at the second in a row that misses
    the target (more replicas rarely lower a lone request's latency; one more count is tried,
    since replicas share the cores and fewer threads each can change it).
    Candidates are measured once each, at most ``max_trials`` in all.
    """
    trials = _Trials(evaluate, max_trials)
    complete = True
    try:
        _walk_outer(space, objective, trials)
    except _BudgetSpent:
        complete = False
    tried = tuple(Trial(c, m) for c, m in trials.done.items())
    return SearchResult(tried, choose(tried, objective), space.grid_size(), complete)


def _walk_outer(space: SearchSpace, objective: Objective, trials: _Trials) -> None:
    outer, inner = space.dimensions[0], space.dimensions[1:]
    current = space.first()
    previous: Measurement | None = None
    misses = 0
    for i, value in enumerate(outer.values):
        start = current.with_value(outer.name, value)
        current = _coordinate_ascent(inner, start, objective, trials, warm=i > 0)
        measured = trials.measure(current)
        if objective.meets_slo(measured) and not objective.fits_memory(measured):
            return  # more replicas only add memory
        if not objective.feasible(measured):
            misses += 1
            if misses == MAX_MISSES:
                return
            continue
        if previous is not None and not objective.better(measured, previous):
            return
        previous = measured


def _coordinate_ascent(
    dims: Sequence[Dimension],
    start: Candidate,
    objective: Objective,
    trials: _Trials,
    warm: bool,
) -> Candidate:
    """Each dimension in turn, the others held; a second pass when a later one moved. Warm
    (``start`` holds the previous replica count's best): climb from there instead."""
    current = start
    for _ in range(MAX_PASSES):
        before = current
        for dim in dims:
            search_line = _climb if warm else _line_search
            current = search_line(dim, current, objective, trials)
        if current == before or len(dims) < 2:
            break
        warm = True
    return current


def _line_search(
    dim: Dimension, start: Candidate, objective: Objective, trials: _Trials
) -> Candidate:
    """Golden-section search for the best value of ``dim``, ties going to the smaller value."""

    def at(i: int) -> Candidate:
        return start.with_value(dim.name, dim.values[i])

    lo, hi = 0, len(dim.values) - 1
    while hi - lo > 2:
        step = round((hi - lo) / PHI)
        left, right = hi - step, lo + step
        if left >= right:
            left, right = right - 1, right
        if objective.better(trials.measure(at(right)), trials.measure(at(left))):
            lo = left
        else:
            hi = right
    best = lo
    for i in range(lo + 1, hi + 1):
        if objective.better(trials.measure(at(i)), trials.measure(at(best))):
            best = i
    return at(best)


def choose(trials: Sequence[Trial], objective: Objective) -> Trial | None:
    """The feasible trial with the highest throughput; among those within the noise of it,
    the one with the fewest replicas (the cheapest), then the highest throughput."""
    feasible = [t for t in trials if objective.feasible(t.measurement)]
    if not feasible:
        return None
    top = max(t.measurement.throughput for t in feasible)
    close = [t for t in feasible if t.measurement.throughput * (1 + objective.tie) >= top]
    return min(close, key=lambda t: (t.candidate.replicas(), -t.measurement.throughput))


def closest(trials: Sequence[Trial], objective: Objective) -> Trial | None:
    """The trial nearest to feasible (for the report when none is)."""
    return max(trials, key=lambda t: objective.score(t.measurement), default=None)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (throughput, p99) points no other point beats on both, by throughput."""
    front = []
    for i, (tput, p99) in enumerate(points):
        dominated = any(
            (t >= tput and p <= p99) and (t > tput or p < p99)
            for j, (t, p) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _climb(dim: Dimension, start: Candidate, objective: Objective, trials: _Trials) -> Candidate:
    """Hill-climb from ``start``'s value: a neighbour first (the smaller one, ties staying
    put), then on in the direction that improved until the next step does not."""

    def at(i: int) -> Candidate:
        return start.with_value(dim.name, dim.values[i])

    best = dim.index(start[dim.name])
    for direction in (-1, 1):
        i = best + direction
        origin = best
        while 0 <= i < len(dim.values) and objective.better(
            trials.measure(at(i)), trials.measure(at(best))
        ):
            best, i = i, i + direction
        if best != origin:
            break
    return at(best)
