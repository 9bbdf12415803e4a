"""Open-loop arrival times: a seeded Poisson process at a constant or linearly ramping rate (pure).

The ramp is exact: unit-rate Poisson points are mapped through the inverse of the cumulative
rate Λ(t) (the time-rescaling theorem), so a ramp has no step artefacts.
"""

from __future__ import annotations

import math
import random


def arrival_times(
    rate: float,
    duration_s: float,
    *,
    rate_end: float | None = None,
    warmup_s: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
) -> list[float]:
    """Send times in seconds from the start: ``warmup_s`` at ``rate``, then ``duration_s``
    ramping linearly from ``rate`` to ``rate_end`` (constant without one).

    With ``limit``, the measured part stops after that many arrivals instead of at
    ``duration_s`` (it then runs on at the final rate).
    """
    rng = random.Random(seed)
    end_rate = rate if rate_end is None else rate_end
    times: list[float] = []
    unit = 0.0
    measured = 0
    while True:
        unit += rng.expovariate(1.0)
        t = _inverse_cumulative(unit, rate, end_rate, warmup_s, duration_s)
        if t >= warmup_s:
            if limit is None and t >= warmup_s + duration_s:
                return times
            measured += 1
            if limit is not None and measured > limit:
                return times
        times.append(t)


def _inverse_cumulative(
    unit: float, rate: float, end_rate: float, warmup_s: float, duration_s: float
) -> float:
    """The time t at which Λ(t) = ``unit``; past the ramp the rate stays at ``end_rate``."""
    if unit <= rate * warmup_s:
        return unit / rate
    left = unit - rate * warmup_s
    slope = (end_rate - rate) / duration_s
    ramp_area = rate * duration_s + slope * duration_s**2 / 2
    if left > ramp_area:
        return warmup_s + duration_s + (left - ramp_area) / end_rate
    # The root in [0, duration_s] of rate*x + slope*x²/2 = left, in the form that stays
    # accurate when the slope is zero or tiny.
    return warmup_s + 2 * left / (rate + math.sqrt(rate * rate + 2 * slope * left))
