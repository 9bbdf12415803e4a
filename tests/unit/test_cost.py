"""CostMeter on a fake clock: replica-seconds integrated piecewise, per million, per request."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from inferd.clock import FakeClock
from inferd.metrics.cost import CostMeter, request_share
from inferd.metrics.registry import ServerMetrics

START = 1000.0
HOUR = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def test_two_replicas_for_half_an_hour_at_3_per_hour_cost_3(clock: FakeClock) -> None:
    meter = CostMeter(3.0, clock)
    meter.set_replicas(2)
    clock.advance(HOUR / 2)
    meter.set_replicas(0)
    assert meter.cost_total() == 3.0
    clock.advance(HOUR)  # scaled to zero: the bill stops
    assert meter.cost_total() == 3.0
    assert meter.replica_seconds() == 3600.0


def test_replica_changes_are_integrated_piecewise(clock: FakeClock) -> None:
    meter = CostMeter(2.0, clock)
    clock.advance(60.0)  # no replica yet: free
    meter.set_replicas(1)
    clock.advance(600.0)
    meter.set_replicas(3)
    clock.advance(1200.0)  # still running: the bill includes the time up to now
    assert meter.replica_seconds() == 600 + 3 * 1200
    assert meter.cost_total() == pytest.approx(4200 * 2.0 / HOUR)


def test_cost_per_million_over_the_window(clock: FakeClock) -> None:
    meter = CostMeter(3.6, clock, window_s=10)  # 0.001 per replica-second
    meter.set_replicas(2)
    for _ in range(100):
        clock.advance(0.5)
        meter.add_inferences(1000)
        clock.advance(0.5)
    # Now t = 1100: the window is seconds 1091..1100, 9 s covered so far.
    assert meter.window_replica_seconds() == 18.0
    assert meter.window_cost() == pytest.approx(0.018)
    assert meter.window_inferences() == 9000
    assert meter.cost_per_million() == pytest.approx(0.018 / 9000 * 1e6)  # 2.0
    assert meter.inferences_total == 100_000


def test_cost_per_million_is_none_without_inferences(clock: FakeClock) -> None:
    meter = CostMeter(3.0, clock)
    meter.set_replicas(1)
    clock.advance(30.0)
    assert meter.cost_per_million() is None
    meter.add_inferences(10)
    clock.advance(10.0)  # the inferences left the window, the replica did not
    assert meter.cost_per_million() is None
    assert meter.window_cost() > 0


def test_window_cost_falls_to_zero_after_scaling_to_zero(clock: FakeClock) -> None:
    meter = CostMeter(3.0, clock, window_s=10)
    meter.set_replicas(4)
    clock.advance(100.0)
    meter.set_replicas(0)
    clock.advance(5.0)
    assert meter.window_replica_seconds() == 4 * 4.0  # the window begins at 1096, they left at 1100
    clock.advance(5.0)
    assert meter.window_replica_seconds() == 0.0
    assert meter.cost_total() == pytest.approx(400 * 3.0 / HOUR)


def test_request_share_is_its_rows_share_of_the_batch_compute() -> None:
    # 3.6/h = 0.001/s; a 0.5 s batch of 8 rows costs 0.0005; 2 of its rows cost a quarter.
    assert request_share(3.6, 0.5, batch_rows=8, rows=2) == pytest.approx(0.000125)
    assert request_share(0.0, 0.5, batch_rows=8, rows=2) == 0.0
    with pytest.raises(ValueError):
        request_share(3.6, 0.5, batch_rows=0, rows=0)


def test_shares_add_up_to_the_bill_times_utilization(clock: FakeClock) -> None:
    meter = CostMeter(3.6, clock)
    meter.set_replicas(1)
    shares = 0.0
    for _ in range(10):  # one 1 s batch of 4 rows every 10 s: 10% busy
        shares += sum(meter.request_share(1.0, batch_rows=4, rows=1) for _ in range(4))
        clock.advance(10.0)
    assert shares == pytest.approx(0.01)
    assert meter.cost_total() == pytest.approx(0.1)  # idle time is billed, not attributed


def test_bad_prices_and_counts_are_refused(clock: FakeClock) -> None:
    for price in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            CostMeter(price, clock)
    with pytest.raises(ValueError):
        CostMeter(1.0, clock).set_replicas(-1)


def test_render_includes_the_cost_figures(clock: FakeClock) -> None:
    server = ServerMetrics(clock, window_s=10)
    model = server.model("mlp", price_per_hour=3.6)
    server.model("idle")  # no inferences: no per-million sample
    model.set_replicas(1, 1)
    clock.advance(0.5)
    model.observe_request("success", 0.01, 0.0, 0.01, rows=500)
    clock.advance(1.5)
    body, _ = server.render()
    samples = {
        (s.name, s.labels["model"]): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if "model" in s.labels
    }
    assert samples[("inferd_cost_total", "mlp")] == pytest.approx(0.002)
    assert samples[("inferd_price_per_hour", "mlp")] == 3.6
    assert samples[("inferd_cost_per_million_inferences", "mlp")] == pytest.approx(4.0)
    assert samples[("inferd_inferences_total", "mlp")] == 500
    assert samples[("inferd_cost_total", "idle")] == 0.0
    assert ("inferd_cost_per_million_inferences", "idle") not in samples


def brute_force_replica_seconds(
    changes: list[tuple[float, int]], begin: float, end: float
) -> float:
    """∫ replicas dt over [begin, end] from a full (unpruned) list of changes."""
    total = 0.0
    for i, (at, replicas) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        total += replicas * max(0.0, min(until, end) - max(at, begin))
    return total


@settings(max_examples=200, deadline=None)
@given(
    window_s=st.integers(min_value=1, max_value=12),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=8)),
        max_size=60,
    ),
)
def test_window_replica_seconds_match_a_brute_force_integral(
    window_s: int, steps: list[tuple[int, int]]
) -> None:
    clock = FakeClock(START)
    meter = CostMeter(1.0, clock, window_s=window_s)
    changes = [(clock.now(), 0)]
    for advance_ms, replicas in steps:
        clock.advance(advance_ms / 1000)
        meter.set_replicas(replicas)
        changes.append((clock.now(), replicas))
        now = clock.now()
        begin = max(float(math.floor(now) - window_s + 1), START)
        expected = brute_force_replica_seconds(changes, begin, now)
        assert meter.window_replica_seconds() == pytest.approx(expected, abs=1e-9)
        assert meter.replica_seconds() == pytest.approx(
            brute_force_replica_seconds(changes, START, now), abs=1e-9
        )
