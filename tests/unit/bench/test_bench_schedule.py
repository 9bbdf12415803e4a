"""Open-loop arrival schedules: seeded Poisson processes, constant and ramping (no clock)."""

from __future__ import annotations

import itertools
import statistics

from inferd.bench.schedule import arrival_times


def test_same_seed_same_schedule_other_seed_another() -> None:
    assert arrival_times(100.0, 5.0, seed=3) == arrival_times(100.0, 5.0, seed=3)
    assert arrival_times(100.0, 5.0, seed=3) != arrival_times(100.0, 5.0, seed=4)


def test_constant_rate_is_poisson_at_that_rate() -> None:
    times = arrival_times(1000.0, 20.0, seed=1)
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-1] < 20.0
    # 20,000 expected; a Poisson count has sd ~141, so 4 sd either side.
    assert abs(len(times) - 20000) < 600
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert abs(statistics.fmean(gaps) - 0.001) < 0.00005
    # Exponential gaps: the standard deviation equals the mean.
    assert abs(statistics.pstdev(gaps) / statistics.fmean(gaps) - 1.0) < 0.05


def test_warmup_runs_at_the_start_rate_before_the_measured_part() -> None:
    times = arrival_times(500.0, 10.0, warmup_s=2.0, seed=2)
    warm = [t for t in times if t < 2.0]
    measured = [t for t in times if t >= 2.0]
    assert abs(len(warm) - 1000) < 130  # 4 sd of Poisson(1000)
    assert abs(len(measured) - 5000) < 290
    assert measured[-1] < 12.0


def test_limit_stops_after_that_many_measured_arrivals() -> None:
    times = arrival_times(200.0, 1.0, warmup_s=0.5, seed=5, limit=1000)
    assert len([t for t in times if t >= 0.5]) == 1000
    # 1,000 arrivals at 200/s need about 5 s, past the 1 s duration.
    assert times[-1] > 3.0


def test_linear_ramp_counts_follow_the_rate() -> None:
    times = arrival_times(100.0, 20.0, rate_end=1900.0, seed=7)
    # Λ(20) = (100 + 1900) / 2 * 20 = 20,000 arrivals.
    assert abs(len(times) - 20000) < 600
    first = sum(1 for t in times if t < 2.0)  # rate 100 -> 280: Λ = 380
    last = sum(1 for t in times if t >= 18.0)  # rate 1720 -> 1900: Λ = 3620
    assert abs(first - 380) < 80
    assert abs(last - 3620) < 240


def test_ramp_down_works_too() -> None:
    times = arrival_times(1000.0, 10.0, rate_end=10.0, seed=9)
    assert abs(len(times) - 5050) < 290
    assert sum(1 for t in times if t >= 9.0) < sum(1 for t in times if t < 1.0) / 5
