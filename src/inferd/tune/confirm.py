"""Confirmation: the chosen configuration measured again, for longer, before it is recommended.

The search keeps the best of many noisy measurements, so it favours the trial that was lucky
(the winner's curse): its operating point is the best of several short load steps. So the best
feasible trial is served again and measured at its operating load for a longer window. If p99
misses the target there, the load steps down as the ramp's own steps go (halfway to the
trial's next lower good step once, then that step, else half) and is measured again, a bounded
number of times. A configuration that never holds gives way to the next best, for a bounded
number of candidates. A confirmed configuration carries its confirmation's figures and
operating point. Pure: the measuring is injected (``Measure``), as the search's ``evaluate`` is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.ramp import Ramp
from inferd.tune.search import Objective, Trial, choose
from inferd.tune.space import Candidate


@dataclass(frozen=True, slots=True)
class StepDown:
    """The load steps of one confirmation: ``loads`` in order, until one meets the target."""

    ramp: Ramp
    """Decides whether a step meets the target: the trials' limit, headroom included."""
    loads: tuple[int, ...]
    """The trial's operating concurrency first, then the lower ones to fall back to."""

    def next_concurrency(self, points: Sequence[LoadPoint]) -> int | None:
        """The next step's concurrency, or None once a step held or the loads are spent."""
        if points and self.ramp.meets(points[-1]):
            return None
        return self.loads[len(points)] if len(points) < len(self.loads) else None

    def measurement(self, points: Sequence[LoadPoint], memory_mb: float) -> Measurement:
        """The step that held as the operating point; without one, the lightest step's p99."""
        return self.ramp.measurement(points, memory_mb)


def step_down(ramp: Ramp, trial: Measurement, max_steps: int) -> StepDown:
    """Confirm ``trial`` at its operating concurrency, then at up to ``max_steps`` lower ones,
    as the ramp comes down: once halfway to the trial's next lower step that met the target
    (the ramp refines once too), then that step and the trial's lower ones, then halving."""
    met = {p.concurrency for p in trial.points if ramp.meets(p)} | {trial.concurrency}
    lowest = min(met)
    ladder = met | {lowest >> k for k in range(1, lowest.bit_length())}
    below = sorted((c for c in ladder if c < trial.concurrency), reverse=True)
    loads = [trial.concurrency]
    if below and below[0] < (middle := (trial.concurrency + below[0]) // 2):
        loads.append(middle)
    return StepDown(ramp, tuple([*loads, *below][: max_steps + 1]))


Measure = Callable[[Trial, StepDown], Measurement]
"""Serve a trial's candidate again, run a confirmation's steps, and return what they measured."""


@dataclass(frozen=True, slots=True)
class ConfirmPolicy:
    """How much confirming is allowed."""

    ramp: Ramp
    candidates: int = 2
    """Configurations confirmed at most (the best, then the next best...); 0: none."""
    steps_down: int = 2
    """Lower loads tried at most when a confirmation misses at the operating load."""


def confirm(
    trials: Sequence[Trial], objective: Objective, measure: Measure, policy: ConfirmPolicy
) -> dict[Candidate, Measurement]:
    """Confirm the best trial; while the best (counting confirmed figures) is unconfirmed,
    confirm it, at most ``policy.candidates`` times. The best changes when a confirmation
    misses (the next best follows) or holds lower than another trial's figure (that one may
    really be faster). Deterministic given the measurements, so a resumed run replays it.
    Returns each confirmation's measurement, by candidate."""
    done: dict[Candidate, Measurement] = {}
    for _ in range(policy.candidates):
        best = choose(confirmed_trials(trials, done), objective)
        if best is None or best.candidate in done:
            break
        steps = step_down(policy.ramp, best.measurement, policy.steps_down)
        done[best.candidate] = measure(best, steps)
    return done


def with_confirmation(trial: Trial, again: Measurement) -> Trial:
    """The trial as confirmed: the confirmation's operating point and figures (the longer,
    unbiased measurement), the larger memory of the two, the load steps of both."""
    m = trial.measurement
    merged = dataclasses.replace(
        again,
        memory_mb=max(m.memory_mb, again.memory_mb),
        points=m.points + again.points,
        warnings=tuple(dict.fromkeys(m.warnings + again.warnings)),
    )
    return Trial(trial.candidate, merged)


def confirmed_trials(
    trials: Sequence[Trial], confirmations: Mapping[Candidate, Measurement]
) -> list[Trial]:
    """The trials, each confirmed one with its confirmation's figures."""
    return [
        with_confirmation(t, confirmations[t.candidate]) if t.candidate in confirmations else t
        for t in trials
    ]


def recommend(
    trials: Sequence[Trial], confirmations: Mapping[Candidate, Measurement], objective: Objective
) -> Trial | None:
    """The best trial; once any confirmation ran, the best confirmed one only, so a figure
    that held once and was never measured again is not recommended over one that held twice."""
    merged = confirmed_trials(trials, confirmations)
    if confirmations:
        merged = [t for t in merged if t.candidate in confirmations]
    return choose(merged, objective)
