"""The SLO batching controller: driven with explicit times and a simulated queue, no sleeps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferd.batching.policy import BatchPolicy, DispatchPolicy
from inferd.batching.simulation import Workload
from inferd.batching.simulation import simulate as run
from inferd.batching.slo import SloController, SloTarget
from inferd.errors import ConfigError

A, B = 0.005, 0.001  # a fake model: 5 ms per batch + 1 ms per row


def fitted(target: SloTarget, a: float = A, b: float = B, batches: int = 64) -> SloController:
    """A controller that has seen exact batch latencies of sizes 1..8 (cycled)."""
    controller = SloController(target)
    for i in range(batches):
        rows = i % 8 + 1
        controller.on_batch_done(rows, a + b * rows)
    return controller


def arrivals(controller: SloController, gap: float, count: int, start: float = 0.0) -> float:
    """``count`` one-row arrivals ``gap`` apart; returns the last arrival time."""
    for i in range(count):
        controller.on_arrival(start + i * gap, 1)
    return start + (count - 1) * gap


# --- the latency fit ------------------------------------------------------------------------


def test_fit_recovers_a_and_b_from_exact_samples() -> None:
    snap = fitted(SloTarget(0.1, 64), a=0.004, b=0.0007, batches=200).snapshot()
    assert snap["a_s"] == pytest.approx(0.004, rel=1e-3)
    assert snap["b_s_per_row"] == pytest.approx(0.0007, rel=1e-3)
    assert snap["margin_s"] < 1e-5  # exact samples: almost no prediction error left
    assert snap["batches"] == 200


def test_one_batch_size_only_assumes_no_amortization() -> None:
    controller = SloController(SloTarget(0.1, 64))
    for _ in range(50):
        controller.on_batch_done(8, 0.010)
    snap = controller.snapshot()
    # a and b cannot be told apart: the pessimistic L(r) = 10 ms * r / 8 ...
    assert snap["a_s"] == pytest.approx(0.0, abs=1e-9)
    assert snap["b_s_per_row"] == pytest.approx(0.010 / 8)
    # ... still lets batches grow past 8 while it fits: 0.6 * 100 ms / 2 = 30 ms = 24 rows.
    assert controller.max_rows() == 24


# --- max_rows --------------------------------------------------------------------------------


def test_max_rows_is_the_largest_batch_within_half_the_planned_budget() -> None:
    target = SloTarget(p99_s=0.100, max_batch_size=64)
    controller = fitted(target)
    snap = controller.snapshot()
    assert snap["headroom"] == pytest.approx(0.6)  # the middle of [0.3, 0.9]
    rows = controller.max_rows()
    assert rows in (24, 25)  # 5 ms + 25 ms = 0.6 * 100 ms / 2, within the fit's error

    def planned(r: int) -> float:
        return snap["a_s"] + snap["b_s_per_row"] * r + snap["margin_s"]

    assert planned(rows) <= 0.030 < planned(rows + 1)


def test_max_rows_is_capped_by_max_batch_size_and_floored_at_one() -> None:
    assert fitted(SloTarget(0.100, 8)).max_rows() == 8
    assert fitted(SloTarget(0.100, 8)).take_rows(100, 0.0, 0.0) == 8
    assert fitted(SloTarget(0.005, 64)).max_rows() == 1  # even one row misses: still one


def test_before_warm_up_take_everything_and_do_not_wait() -> None:
    controller = fitted(SloTarget(0.100, 64), batches=4)
    arrivals(controller, 0.001, 10)
    assert controller.max_rows() == 64
    assert controller.wait_before_dispatch(1, 0.009, 0.009) == 0.0


def test_max_rows_grows_when_the_slo_size_cannot_keep_up() -> None:
    # 800 rows/s: at 25 rows a batch takes 30 ms, serving 833 rows/s, 96% busy: the queue
    # would grow, so the cap rises to the size that keeps the replica 90% busy: 800 * (5 ms +
    # r ms) = 0.9 r, r = 40.
    controller = fitted(SloTarget(0.100, 64))
    arrivals(controller, 1 / 800, 200)
    rows = controller.max_rows()
    assert rows in (40, 41)  # within the fit's error
    assert 800 * (A + B * rows) <= 0.9 * rows
    arrivals(controller, 1 / 2000, 200, start=1.0)  # past the replica's capacity: take all
    assert controller.max_rows() == 64


def test_pieces_of_one_request_count_as_one_arrival() -> None:
    controller = SloController(SloTarget(0.100, 16))
    for i in range(100):  # every 10 ms, a 64-row request cut into 4 pieces of 16
        for _ in range(4):
            controller.on_arrival(i * 0.010, 16)
    assert controller.snapshot()["arrival_rows_per_s"] == pytest.approx(6400)


# --- wait_before_dispatch -------------------------------------------------------------------


def test_wait_solves_for_the_oldest_requests_budget() -> None:
    controller = fitted(SloTarget(0.100, 64))
    now = arrivals(controller, 0.005, 20)  # 200 rows/s
    wait = controller.wait_before_dispatch(pending_rows=1, oldest_arrival=now, now=now)
    # age + w + a + b * (1 + 200 w) = 0.6 * 100 ms: w = 54 ms / 1.2 = 45 ms.
    assert wait == pytest.approx(0.045, rel=1e-3)
    assert wait + A + B * (1 + 200 * wait) == pytest.approx(0.060, rel=1e-3)
    # Older, the oldest request has less to spend.
    assert controller.wait_before_dispatch(1, now - 0.012, now) == pytest.approx(0.035, rel=1e-3)


def test_no_wait_past_the_moment_the_batch_is_expected_full() -> None:
    controller = fitted(SloTarget(0.100, 25))
    now = arrivals(controller, 0.001, 50)  # 1000 rows/s: 24 more rows come in 24 ms
    assert controller.wait_before_dispatch(1, now, now) == pytest.approx(0.024, rel=1e-3)


def test_no_wait_when_the_batch_is_full() -> None:
    controller = fitted(SloTarget(0.100, 64))
    now = arrivals(controller, 0.005, 20)
    assert controller.wait_before_dispatch(controller.max_rows(), now, now) == 0.0
    assert controller.wait_before_dispatch(1000, now, now) == 0.0


def test_no_wait_when_the_age_already_eats_the_budget() -> None:
    controller = fitted(SloTarget(0.100, 64))
    now = arrivals(controller, 0.005, 20)
    assert controller.wait_before_dispatch(1, now - 0.054, now) == 0.0
    assert controller.wait_before_dispatch(1, now - 1.0, now) == 0.0


def test_no_wait_when_no_row_is_expected_in_time() -> None:
    controller = fitted(SloTarget(0.100, 64))
    now = arrivals(controller, 0.005, 20)
    # Silent for 2 s after 200 rows/s: the rate decays, and waiting would bring nothing.
    assert controller.wait_before_dispatch(1, now + 2.0, now + 2.0) == 0.0
    assert fitted(SloTarget(0.100, 64)).wait_before_dispatch(1, 0.0, 0.0) == 0.0  # no arrivals


# --- headroom ---------------------------------------------------------------------------------


def answer(controller: SloController, latency: float, count: int = 64) -> float:
    for _ in range(count):
        controller.on_request_done(latency)
    return controller.snapshot()["headroom"]


def test_headroom_shrinks_over_target_and_recovers_well_under_it() -> None:
    controller = SloController(SloTarget(0.100, 64))
    assert answer(controller, 0.150, count=63) == pytest.approx(0.6)  # once per 64 requests
    assert answer(controller, 0.150, count=1) == pytest.approx(0.54)
    # Only requests answered since the change count, so the old misses don't shrink it again.
    assert answer(controller, 0.010) == pytest.approx(0.54 * 1.02)
    assert answer(controller, 0.080) == pytest.approx(0.54 * 1.02)  # between 0.7 T and T: hold


def test_headroom_stays_within_its_bounds() -> None:
    controller = SloController(SloTarget(0.100, 64, min_headroom=0.4, max_headroom=0.8))
    assert answer(controller, 1.0, count=64 * 20) == pytest.approx(0.4)
    assert answer(controller, 0.001, count=64 * 100) == pytest.approx(0.8)
    assert controller.snapshot()["p99_s"] == pytest.approx(0.001)


def test_target_is_validated() -> None:
    with pytest.raises(ConfigError, match="p99_s"):
        SloTarget(0.0, 8)
    with pytest.raises(ConfigError, match="max_batch_size"):
        SloTarget(0.1, 0)
    with pytest.raises(ConfigError, match="headroom"):
        SloTarget(0.1, 8, min_headroom=0.9, max_headroom=0.5)


# --- properties -------------------------------------------------------------------------------

seconds = st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False)
events = st.lists(
    st.one_of(
        st.tuples(st.just("arrival"), seconds, st.integers(1, 10_000)),
        st.tuples(st.just("batch"), st.floats(0.0, 100.0), st.integers(1, 10_000)),
        st.tuples(st.just("request"), st.floats(0.0, 100.0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 512), st.integers(0, 10**6), seconds, seconds)
def test_wait_is_finite_and_non_negative_and_rows_in_bounds(
    history: list[tuple[str, float, int]], limit: int, pending: int, oldest: float, now: float
) -> None:
    controller = SloController(SloTarget(0.050, limit))
    for kind, value, rows in history:
        if kind == "arrival":
            controller.on_arrival(value, rows)
        elif kind == "batch":
            controller.on_batch_done(rows, value)
        else:
            controller.on_request_done(value)
        assert 1 <= controller.max_rows() <= limit
    wait = controller.wait_before_dispatch(pending, oldest, now)
    assert math.isfinite(wait) and wait >= 0.0
    assert all(math.isfinite(v) for v in controller.snapshot().values())


# --- a simulated queue ------------------------------------------------------------------------


def simulate(policy: DispatchPolicy, rate: float) -> tuple[float, float]:
    """One replica, batches of (A + B·rows) ± 10%: the p99 and the mean batch size."""
    out = run(policy, Workload(rate=rate, a_s=A, b_s=B, requests=6000, seed=7))
    return out.p99_s, out.mean_batch


def test_slo_mode_meets_the_target_with_bigger_batches_than_no_delay() -> None:
    target = 0.050
    rate = 300.0  # rows/s: about 40% of a replica with one-row batches
    slo_p99, slo_batch = simulate(SloController(SloTarget(target, 64)), rate)
    zero_p99, zero_batch = simulate(BatchPolicy(64, 0.0), rate)
    late_p99, _ = simulate(BatchPolicy(64, target), rate)
    assert slo_p99 <= target
    assert slo_batch > 2 * zero_batch  # it spends the latency budget on amortization
    assert late_p99 > target  # a fixed delay the size of the target misses it
    assert zero_p99 < slo_p99  # no free lunch: the batches cost latency, within the target


def test_past_capacity_the_cap_does_not_starve_the_replica() -> None:
    # 700 rows/s: batches capped for the SLO (about 9 rows, 14 ms: 640 rows/s) cannot keep up.
    # A cap without the stability floor let the queue grow to a p99 of about 26 s here.
    rate = 700.0
    slo_p99, slo_batch = simulate(SloController(SloTarget(0.050, 64)), rate)
    zero_p99, _ = simulate(BatchPolicy(64, 0.0), rate)
    assert slo_p99 < 1.5 * zero_p99
    assert slo_batch > 9
