"""The trial's load ramp, step by step on made-up load steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.ramp import Ramp, start_guess

Server = Callable[[int], LoadPoint]


def run(ramp: Ramp, server: Server) -> list[int]:
    points: list[LoadPoint] = []
    while (c := ramp.next_concurrency(points)) is not None:
        points.append(server(c))
        assert len(points) < 50, "the ramp must end"
    return [p.concurrency for p in points]


def saturating(capacity: float, base_ms: float = 1.0) -> Server:
    """Throughput grows with concurrency up to ``capacity``, then latency grows instead."""

    def step(c: int) -> LoadPoint:
        throughput = min(c / base_ms * 1e3, capacity)
        latency = c / throughput * 1e3
        return LoadPoint(c, throughput, latency * 1.5, latency, num_ok=100)

    return step


def test_climbs_by_doubling_until_throughput_stops_growing() -> None:
    ramp = Ramp(slo_p99_ms=1000.0, max_concurrency=256)
    steps = run(ramp, saturating(capacity=8000.0))  # saturates at concurrency 8
    assert steps == [1, 2, 4, 8, 16]


def queueing(c: int) -> LoadPoint:
    """Latency 1 ms + 1 ms per client: throughput still grows (slowly), p99 = latency."""
    latency = 1.0 + c
    return LoadPoint(c, c / latency * 1e3, latency, latency, num_ok=100)


def test_refines_once_between_the_last_good_step_and_the_first_bad_one() -> None:
    ramp = Ramp(slo_p99_ms=10.0, max_concurrency=256, headroom=0.0)
    steps = run(ramp, queueing)
    assert steps == [1, 2, 4, 8, 16, 12]  # 16 and 12 break 10 ms
    best = ramp.operating_point([queueing(c) for c in steps])
    assert best is not None and best.concurrency == 8 and best.p99_ms <= 10.0


def test_a_refinement_that_meets_the_target_becomes_the_operating_point() -> None:
    ramp = Ramp(slo_p99_ms=14.0, max_concurrency=256, headroom=0.0)
    steps = run(ramp, queueing)
    assert steps == [1, 2, 4, 8, 16, 12]
    best = ramp.operating_point([queueing(c) for c in steps])
    assert best is not None and best.concurrency == 12


def test_a_high_start_that_breaks_the_target_comes_down() -> None:
    ramp = Ramp(slo_p99_ms=10.0, max_concurrency=256, start=32, headroom=0.0)
    assert run(ramp, queueing) == [32, 16, 8, 12]


def test_stops_at_max_concurrency() -> None:
    ramp = Ramp(slo_p99_ms=1e6, max_concurrency=6)
    assert run(ramp, saturating(capacity=1e9)) == [1, 2, 4, 6]


def test_headroom_keeps_a_margin_below_the_target() -> None:
    point = LoadPoint(4, 100.0, p99_ms=9.5, num_ok=10)
    assert Ramp(10.0, headroom=0.0).meets(point)
    assert not Ramp(10.0, headroom=0.1).meets(point)
    assert not Ramp(10.0).meets(LoadPoint(4, 100.0, p99_ms=1.0, num_ok=10, num_errors=1))


def test_nothing_meets_the_target_at_concurrency_one() -> None:
    ramp = Ramp(slo_p99_ms=0.5)
    server = saturating(capacity=1e6)
    steps = run(ramp, server)
    assert steps == [1]
    measured = ramp.measurement([server(1)], memory_mb=10.0)
    assert not measured.meets_slo and measured.error is None
    assert measured.throughput == 0.0 and measured.p99_ms == 1.5


def test_a_step_where_every_request_failed_is_a_trial_error() -> None:
    ramp = Ramp(slo_p99_ms=10.0)
    measured = ramp.measurement([LoadPoint(1, 0.0, math.inf, num_ok=0, num_errors=7)], 5.0)
    assert measured.error == "all 7 requests failed at concurrency 1"
    assert not measured.meets_slo


def test_measurement_round_trips_through_json() -> None:
    ramp = Ramp(slo_p99_ms=10.0, headroom=0.0)
    server = saturating(capacity=1e6)
    measured = ramp.measurement([server(c) for c in (1, 2, 4, 8, 6)], memory_mb=123.0)
    assert Measurement.from_json(measured.to_json()) == measured
    failed = ramp.measurement([], 0.0)
    assert Measurement.from_json(failed.to_json()) == failed


def test_start_guess_halves_the_best_operating_point_scaled_to_the_replicas() -> None:
    assert start_guess([], 2) == 1
    done = [
        (1, Measurement(1000.0, 5.0, 10.0, concurrency=24)),
        (1, Measurement(500.0, 5.0, 10.0, concurrency=64)),
        (2, Measurement(0.0, 50.0, 10.0)),  # met nothing: ignored
    ]
    assert start_guess(done, 1) == 8  # 24 / 2 = 12, floored to a power of two
    assert start_guess(done, 2) == 16


@pytest.mark.parametrize("kwargs", [{"slo_p99_ms": 0.0}, {"slo_p99_ms": 1.0, "headroom": 1.0}])
def test_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Ramp(**kwargs)
