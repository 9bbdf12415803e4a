"""ServerMetrics / ModelMetrics on a fake clock: outcomes, SLO signals, exposition, the window."""

from __future__ import annotations

import math

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from inferd.clock import FakeClock
from inferd.metrics.instruments import OUTCOMES, Histogram
from inferd.metrics.registry import ModelMetrics, ServerMetrics
from inferd.metrics.window import SlidingWindow

START = 100.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: ServerMetrics) -> Samples:
    """Every sample of a render, parsed back: (name, labels) -> value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def server(clock: FakeClock) -> ServerMetrics:
    return ServerMetrics(clock, window_s=10)


def test_each_outcome_is_counted_and_exported(server: ServerMetrics) -> None:
    model = server.model("echo")
    for i, outcome in enumerate(OUTCOMES):
        for _ in range(i + 1):
            model.observe_request(outcome, 0.01, 0.001, 0.002, rows=3)
    got = scrape(server)
    for i, outcome in enumerate(OUTCOMES):
        assert sample(got, "inferd_requests_total", model="echo", outcome=outcome) == i + 1
    assert sample(got, "inferd_inferences_total", model="echo") == 3  # rows of the one success
    assert sample(got, "inferd_request_duration_seconds_count", model="echo") == 28


def test_an_unknown_outcome_is_refused(server: ServerMetrics) -> None:
    with pytest.raises(ValueError, match="outcome 'ok'"):
        server.model("echo").observe_request("ok", 0.01, 0.0, 0.0, rows=1)


def test_goodput_rises_then_old_buckets_expire(server: ServerMetrics, clock: FakeClock) -> None:
    model = server.model("echo")
    clock.advance(0.5)
    for _ in range(20):
        model.observe_request("success", 0.01, 0.0, 0.005, rows=1)
    clock.advance(0.5)  # t = 101: the window covers [100, 101], floored at 1 s
    assert model.goodput_per_s() == 20.0
    clock.advance(4.0)  # t = 105: still in the window, spread over the 5 s it covers
    assert model.goodput_per_s() == 4.0
    clock.advance(4.5)  # t = 109.5: second 100 is the window's oldest
    assert model.goodput_per_s() == 20 / 9.5
    clock.advance(0.5)  # t = 110: second 100 has left the 10 s window
    assert model.goodput_per_s() == 0.0
    assert sample(scrape(server), "inferd_good_requests_total", model="echo") == 20


def test_goodput_in_steady_state_is_the_arrival_rate(
    server: ServerMetrics, clock: FakeClock
) -> None:
    model = server.model("echo")
    for _ in range(30):
        clock.advance(0.5)
        for _ in range(7):
            model.observe_request("success", 0.01, 0.0, 0.005, rows=1)
        clock.advance(0.5)
    assert model.goodput_per_s() == pytest.approx(7.0)
    assert sample(scrape(server), "inferd_goodput_per_second", model="echo") == pytest.approx(7.0)


def test_attainment_counts_deadlines_and_the_target(server: ServerMetrics) -> None:
    model = server.model("fraud", slo_target_s=0.1)
    model.observe_request("success", 0.05, 0.01, 0.02, rows=1)  # good
    model.observe_request("success", 0.1, 0.01, 0.02, rows=1, deadline_s=0.1)  # good: inclusive
    model.observe_request("success", 0.2, 0.01, 0.02, rows=1)  # over the model's target
    model.observe_request("success", 0.05, 0.01, 0.02, rows=1, deadline_s=0.01)  # over deadline
    model.observe_request("timeout", 0.5, 0.5, 0.0, rows=1)
    model.observe_request("shed", 0.0, 0.0, 0.0, rows=1)
    model.observe_request("client_error", 0.0, 0.0, 0.0, rows=1)  # not the server's miss
    assert model.slo_attainment() == pytest.approx(2 / 6)
    got = scrape(server)
    assert sample(got, "inferd_slo_attainment_ratio", model="fraud") == pytest.approx(2 / 6)
    assert sample(got, "inferd_good_requests_total", model="fraud") == 2
    assert sample(got, "inferd_slo_target_seconds", model="fraud") == 0.1


def test_without_a_target_only_deadlines_count(server: ServerMetrics) -> None:
    model = server.model("echo")
    model.observe_request("success", 5.0, 0.0, 5.0, rows=1)
    model.observe_request("success", 5.0, 0.0, 5.0, rows=1, deadline_s=1.0)
    assert model.slo_attainment() == 0.5
    assert ("inferd_slo_target_seconds", frozenset({("model", "echo")})) not in scrape(server)


def test_attainment_is_absent_without_requests(server: ServerMetrics, clock: FakeClock) -> None:
    model = server.model("echo")
    model.observe_request("client_error", 0.0, 0.0, 0.0, rows=1)
    assert model.slo_attainment() is None
    assert model.batch_fill_ratio() is None
    got = scrape(server)
    assert "inferd_slo_attainment_ratio" not in names(got)
    assert sample(got, "inferd_goodput_per_second", model="echo") == 0.0
    model.observe_request("model_error", 0.01, 0.0, 0.01, rows=1)
    assert model.slo_attainment() == 0.0
    clock.advance(10.0)
    assert model.slo_attainment() is None  # the window forgot it


def test_queue_time_per_priority_and_compute_time(server: ServerMetrics) -> None:
    model = server.model("echo")
    model.observe_request("success", 0.01, 0.004, 0.005, rows=1, priority=0)
    model.observe_request("success", 0.02, 0.3, 0.005, rows=1, priority=2)
    model.observe_request("timeout", 1.0, 1.0, 0.0, rows=1, priority=2)  # queued, never computed
    model.observe_request("shed", 0.0, 0.0, 0.0, rows=1, priority=5)  # never queued
    got = scrape(server)
    queue = "inferd_queue_duration_seconds"
    assert sample(got, f"{queue}_count", model="echo", priority="0") == 1
    assert sample(got, f"{queue}_count", model="echo", priority="2") == 2
    assert sample(got, f"{queue}_sum", model="echo", priority="2") == pytest.approx(1.3)
    assert sample(got, f"{queue}_bucket", model="echo", priority="2", le="0.25") == 0
    assert sample(got, f"{queue}_bucket", model="echo", priority="2", le="0.5") == 1
    assert (f"{queue}_count", frozenset({("model", "echo"), ("priority", "5")})) not in got
    assert sample(got, "inferd_compute_duration_seconds_count", model="echo") == 2


def test_latency_buckets_span_100us_to_30s(server: ServerMetrics) -> None:
    model = server.model("echo")
    for seconds in (0.0001, 30.0, 31.0):
        model.observe_request("success", seconds, 0.0, 0.0, rows=1)
    got = scrape(server)
    bucket = "inferd_request_duration_seconds_bucket"
    assert sample(got, bucket, model="echo", le="0.0001") == 1  # le: the bound is inclusive
    assert sample(got, bucket, model="echo", le="30.0") == 2
    assert sample(got, bucket, model="echo", le="+Inf") == 3


def test_batches_fill_ratio_and_utilization(server: ServerMetrics, clock: FakeClock) -> None:
    model = server.model("echo")
    model.set_replicas(2, 2)
    model.observe_batch(16, 64, 2.0)
    model.observe_batch(64, 64, 3.0)
    clock.advance(5.0)  # 10 replica-seconds provisioned, 5 of them busy
    assert model.batch_fill_ratio() == 80 / 128
    assert model.utilization() == 0.5
    got = scrape(server)
    assert sample(got, "inferd_batch_fill_ratio", model="echo") == 80 / 128
    assert sample(got, "inferd_replica_utilization_ratio", model="echo") == 0.5
    assert sample(got, "inferd_batch_size_bucket", model="echo", le="8.0") == 0
    assert sample(got, "inferd_batch_size_bucket", model="echo", le="16.0") == 1
    assert sample(got, "inferd_batch_size_bucket", model="echo", le="1024.0") == 2
    assert sample(got, "inferd_busy_seconds_total", model="echo") == 5.0


def test_state_gauges_and_event_counters(server: ServerMetrics) -> None:
    model = server.model("echo")
    model.set_queue_depth(12)
    model.set_in_flight(3)
    model.set_replicas(1, 4)
    model.on_replica_restart("crash")
    model.on_shed()
    model.on_scaling_decision("up", "queue")
    model.on_scaling_decision("up", "queue")
    assert (model.ongoing_requests, model.queue_depth) == (3, 12)
    got = scrape(server)
    assert sample(got, "inferd_queue_depth_rows", model="echo") == 12
    assert sample(got, "inferd_in_flight_requests", model="echo") == 3
    assert sample(got, "inferd_replicas", model="echo") == 1
    assert sample(got, "inferd_replicas_desired", model="echo") == 4
    assert sample(got, "inferd_replica_restarts_total", model="echo", reason="crash") == 1
    assert sample(got, "inferd_replica_restarts_total", model="echo", reason="unhealthy") == 0
    assert sample(got, "inferd_shed_total", model="echo") == 1
    decisions = "inferd_autoscaler_decisions_total"
    assert sample(got, decisions, model="echo", direction="up", reason="queue") == 2


@pytest.mark.parametrize(
    ("direction", "reason"), [("sideways", "load"), ("up", "because the queue looked long")]
)
def test_free_text_labels_are_refused(server: ServerMetrics, direction: str, reason: str) -> None:
    with pytest.raises(ValueError):
        server.model("echo").on_scaling_decision(direction, reason)
    with pytest.raises(ValueError):
        server.model("echo").on_replica_restart(reason)


def test_models_are_created_once(server: ServerMetrics) -> None:
    model = server.model("fraud", slo_target_s=0.2, price_per_hour=1.5)
    assert server.model("fraud") is model
    assert server.model("fraud", slo_target_s=0.2) is model
    assert server.models() == [model]
    with pytest.raises(ValueError, match="other settings"):
        server.model("fraud", price_per_hour=2.0)


def test_two_servers_do_not_collide(clock: FakeClock) -> None:
    first, second = ServerMetrics(clock), ServerMetrics(clock)
    first.model("echo").observe_request("success", 0.01, 0.0, 0.01, rows=1)
    second.model("echo")
    assert sample(scrape(first), "inferd_requests_total", model="echo", outcome="success") == 1
    assert sample(scrape(second), "inferd_requests_total", model="echo", outcome="success") == 0
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("inferd_") for name in global_names)


def test_render_speaks_openmetrics_when_asked(server: ServerMetrics) -> None:
    server.model("echo")
    body, content_type = server.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_a_model_can_stand_alone(clock: FakeClock) -> None:
    model = ModelMetrics("solo", clock, window_s=5, slo_target_s=0.05)
    model.observe_request("success", 0.01, 0.0, 0.01, rows=1)
    assert model.slo_attainment() == 1.0
    with pytest.raises(ValueError):
        ModelMetrics("bad", clock, slo_target_s=0.0)


def test_histogram_cumulates_on_read() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 3.0):
        histogram.observe(value)
    assert histogram.buckets() == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert (histogram.count, histogram.sum) == (4, 6.0)


# ---- the sliding window ----


def test_window_covers_the_current_second_and_the_ones_before() -> None:
    window = SlidingWindow(3, start=0.0)
    window.add(0.2, 1)
    window.add(1.7, 10)
    window.add(2.1, 100)
    assert window.total(2.9) == 111
    assert window.total(3.0) == 110  # second 0 left the window
    assert window.begin(3.5) == 1.0
    assert window.span(3.5) == 2.5
    assert window.rate(3.5) == 110 / 2.5
    assert window.total(100.0) == 0


def test_a_young_window_is_not_diluted() -> None:
    window = SlidingWindow(10, start=50.0)
    window.add(50.5, 4)
    assert window.span(52.0) == 2.0
    assert window.rate(52.0) == 2.0
    assert window.span(50.1) == 1.0  # floored, so one early event is not an infinite rate


def test_window_rejects_a_zero_length() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0, start=0.0)


steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=5)),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(window_s=st.integers(min_value=1, max_value=15), steps=steps)
def test_window_total_matches_a_brute_force_recount(
    window_s: int, steps: list[tuple[int, int]]
) -> None:
    clock = FakeClock(START)
    window = SlidingWindow(window_s, start=clock.now())
    events: list[tuple[float, int]] = []
    for advance_ms, value in steps:
        clock.advance(advance_ms / 1000)
        now = clock.now()
        window.add(now, value)
        events.append((now, value))
        oldest = math.floor(now) - window_s + 1
        assert window.total(now) == sum(v for t, v in events if t >= oldest)
