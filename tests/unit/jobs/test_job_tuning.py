"""The batch-size search on a fake clock and a fake measured model (rows/s by batch size)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.clock import FakeClock
from inferd.jobs.tuning import BatchSizeSearch, SearchConfig, nearest, powers_of_two

SIZES = powers_of_two(8, 4096)


def run(search: BatchSizeSearch, clock: FakeClock, speed: Callable[[int], float]) -> list[int]:
    """Drive the search to its decision; the sizes measured, in order."""
    measured = []
    while (trial := search.next_trial()) is not None:
        search.begin()
        # A warm-up batch is slow (first call of a shape): it must not count.
        clock.advance(10.0 if not trial.measured else trial.rows / speed(trial.size))
        search.finish(trial)
        if trial.measured:
            measured.append(trial.size)
    return measured


def peaked(peak: int) -> Callable[[int], float]:
    return lambda size: 1000.0 * min(size, peak) / peak - (size > peak) * size / 100


def test_powers_of_two_and_nearest() -> None:
    assert powers_of_two(8, 100) == (8, 16, 32, 64)
    assert powers_of_two(8, 8192, divides=768) == (8, 16, 32, 64, 128, 256)
    assert nearest(SIZES, 64) == 64
    assert nearest(SIZES, 100) == 128


def test_climbs_up_to_the_peak() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig(SIZES, start=64), clock)
    measured = run(search, clock, peaked(1024))
    assert search.done and search.best == 1024
    assert measured == [64, 128, 256, 512, 1024, 2048, 4096]  # patience: two sizes past it


def test_turns_down_when_the_start_is_past_the_peak() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig(SIZES, start=512), clock)
    measured = run(search, clock, lambda size: 1000.0 / (1 + abs(size - 32) / 32))
    assert search.best == 32
    assert measured == [512, 1024, 2048, 256, 128, 64, 32, 16, 8]


def test_stops_where_a_doubling_no_longer_pays() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig(SIZES, start=64, min_gain=0.05), clock)
    # +1 % past 256: not worth the memory and the latency.
    measured = run(
        search, clock, lambda size: 1000.0 * min(size, 256) * (1.01 if size > 256 else 1)
    )
    assert search.best == 256 and measured[-2:] == [512, 1024]


def test_one_slow_measurement_does_not_end_the_climb() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig(SIZES, start=64), clock)
    noisy = {64: 1000.0, 128: 1500.0, 256: 900.0, 512: 2500.0, 1024: 2400.0, 2048: 2000.0}
    run(search, clock, lambda size: noisy.get(size, 100.0))
    assert search.best == 512


def test_trials_last_about_trial_s_at_the_speed_measured() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig(SIZES, start=64, trial_s=0.5), clock)
    durations = []
    while (trial := search.next_trial()) is not None:
        search.begin()
        took = trial.rows / 10_000.0
        clock.advance(took)
        search.finish(trial)
        if trial.measured:
            durations.append(took)
    assert all(d <= 0.5 + 4096 / 10_000 for d in durations[1:])
    assert max(durations) >= 0.45


def test_a_single_candidate_is_measured_once() -> None:
    clock = FakeClock()
    search = BatchSizeSearch(SearchConfig((256,), start=256), clock)
    assert run(search, clock, lambda size: 500.0) == [256]
    assert search.best == 256 and search.rates[256] == pytest.approx(500.0)


def test_finish_without_begin_is_a_bug() -> None:
    search = BatchSizeSearch(SearchConfig(SIZES, start=64), FakeClock())
    trial = search.next_trial()
    assert trial is not None and not trial.measured
    with pytest.raises(RuntimeError):
        search.finish(trial)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="ascending"):
        SearchConfig((64, 32), start=64)
    with pytest.raises(ValueError, match="not one of"):
        SearchConfig((32, 64), start=128)


@given(
    speeds=st.lists(st.floats(1.0, 1e6), min_size=len(SIZES), max_size=len(SIZES)),
    start=st.sampled_from(SIZES),
)
def test_decides_on_a_size_within_min_gain_of_the_fastest_measured(
    speeds: list[float], start: int
) -> None:
    clock = FakeClock()
    config = SearchConfig(SIZES, start=start)
    search = BatchSizeSearch(config, clock)
    by_size = dict(zip(SIZES, speeds, strict=True))
    measured = run(search, clock, by_size.__getitem__)
    assert search.done and len(measured) == len(set(measured)) <= len(SIZES)
    assert search.best in measured
    # A larger size must beat the best by min_gain to replace it: within that, smaller wins.
    best_rate = search.rates[search.best] * (1 + config.min_gain)
    assert all(best_rate >= rate * (1 - 1e-9) for rate in search.rates.values())
