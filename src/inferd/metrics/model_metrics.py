"""One model's metrics: counts and histograms per request and batch, and the SLO signals.

A request is **good** when its outcome is ``success`` and its total latency is within its own
deadline (if it had one) and within the model's latency target (if it has one). Over the
sliding window (``window.py``): **goodput** = good requests per second; **SLO attainment** =
good / requests with any outcome but ``client_error`` (the client's fault is not the server's
miss). The hot path only bumps plain numbers and ring buckets (one writer: the server's event
loop); Prometheus families and windowed figures are built when read.
"""

from __future__ import annotations

import time

from inferd.clock import Clock
from inferd.metrics.cost import CostMeter
from inferd.metrics.exposition import Exposition
from inferd.metrics.inference_stats import InferenceStats
from inferd.metrics.instruments import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    NEVER_QUEUED,
    OUTCOMES,
    RESTART_REASONS,
    SCALING_DIRECTIONS,
    SCALING_REASONS,
    Histogram,
)
from inferd.metrics.window import SlidingWindow


class ModelMetrics:
    """One model's metrics; get it from ``ServerMetrics.model(name)``."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        window_s: int = 10,
        slo_target_s: float | None = None,
        price_per_hour: float = 0.0,
    ) -> None:
        if slo_target_s is not None and not slo_target_s > 0:
            raise ValueError(f"slo_target_s = {slo_target_s}: expected seconds > 0 or None")
        self.name = name
        self.slo_target_s = slo_target_s
        self.cost = CostMeter(price_per_hour, clock, window_s)
        self.stats = InferenceStats()
        """Triton-style cumulative statistics (``/v2/models/{name}/stats``)."""
        self._clock = clock
        start = clock.now()
        self._good = SlidingWindow(window_s, start)
        self._eligible = SlidingWindow(window_s, start)  # every outcome but client_error
        self._batch_rows = SlidingWindow(window_s, start)
        self._batch_capacity = SlidingWindow(window_s, start)
        self._busy = SlidingWindow(window_s, start)
        self._outcomes = dict.fromkeys(OUTCOMES, 0)
        self._good_total = 0
        self._request_duration = Histogram(LATENCY_BUCKETS)
        self._compute_duration = Histogram(LATENCY_BUCKETS)
        self._queue_duration: dict[int, Histogram] = {}  # by priority, created on first use
        self._batch_size = Histogram(BATCH_SIZE_BUCKETS)
        self._busy_total = 0.0
        self._queue_depth = 0
        self._in_flight = 0
        self._replicas = self._replicas_desired = 0
        self._restarts = dict.fromkeys(RESTART_REASONS, 0)
        self._shed = 0
        self._decisions: dict[tuple[str, str], int] = {}

    # ---- per request and per batch (the hot path) ----

    def observe_request(
        self,
        outcome: str,
        total_s: float,
        queue_s: float,
        compute_s: float,
        rows: int,
        priority: int = 0,
        deadline_s: float | None = None,
    ) -> None:
        """Record one answered request; ``deadline_s`` is its latency budget, like ``total_s``."""
        if outcome not in self._outcomes:
            raise ValueError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        self._outcomes[outcome] += 1
        self._request_duration.observe(total_s)
        if outcome not in NEVER_QUEUED:
            self._queue_histogram(priority).observe(queue_s)
        if compute_s > 0:  # a request that never reached a replica has no compute time
            self._compute_duration.observe(compute_s)
        if outcome == "client_error":
            self.stats.on_failure(total_s)
            return
        now = self._clock.now()
        self._eligible.add(now)
        if outcome == "success":
            self.stats.on_success(total_s, queue_s, compute_s, now)
            self.cost.add_inferences(rows)
            if self._is_good(total_s, deadline_s):
                self._good.add(now)
                self._good_total += 1
        else:
            self.stats.on_failure(total_s)

    def last_inference_unix_ms(self) -> int:
        """When the last successful request was answered, in Unix milliseconds; 0: never.

        Kept on the metrics' clock and converted when read: no wall-clock read per request.
        """
        at = self.stats.last_success_at
        if at is None:
            return 0
        return int((time.time() - (self._clock.now() - at)) * 1000)

    def observe_batch(self, rows: int, max_rows: int, compute_s: float) -> None:
        """Record one computed batch of ``rows`` out of ``max_rows`` that took ``compute_s``."""
        now = self._clock.now()
        self.stats.on_batch(rows, compute_s)
        self._batch_size.observe(rows)
        self._batch_rows.add(now, rows)
        self._batch_capacity.add(now, max(max_rows, rows))
        self._busy_total += compute_s
        self._busy.add(now, compute_s)

    def _is_good(self, total_s: float, deadline_s: float | None) -> bool:
        """Within the request's deadline and the model's target, where each exists."""
        if deadline_s is not None and total_s > deadline_s:
            return False
        return self.slo_target_s is None or total_s <= self.slo_target_s

    def _queue_histogram(self, priority: int) -> Histogram:
        """The queue-time histogram of ``priority``."""
        histogram = self._queue_duration.get(priority)
        if histogram is None:
            histogram = self._queue_duration[priority] = Histogram(LATENCY_BUCKETS)
        return histogram

    # ---- state reported by the batcher, the pool and the autoscaler ----

    def set_queue_depth(self, rows: int) -> None:
        """Rows now waiting in the model's queue."""
        self._queue_depth = rows

    def set_in_flight(self, n: int) -> None:
        """Requests now admitted and not yet answered."""
        self._in_flight = n

    def set_replicas(self, current: int, desired: int) -> None:
        """Replicas running now and wanted by the autoscaler; the bill follows ``current``."""
        self.cost.set_replicas(current)
        self._replicas, self._replicas_desired = current, desired

    def on_replica_restart(self, reason: str) -> None:
        """Count a replica restart; ``reason`` is one of ``RESTART_REASONS``."""
        if reason not in self._restarts:
            raise ValueError(f"restart reason {reason!r}: expected one of {RESTART_REASONS}")
        self._restarts[reason] += 1

    def on_shed(self) -> None:
        """Count a load-shedding event (the request still reports outcome ``shed`` once)."""
        self._shed += 1

    def on_scaling_decision(self, direction: str, reason: str) -> None:
        """Count an autoscaler decision; both values come from the fixed tuples."""
        if direction not in SCALING_DIRECTIONS:
            raise ValueError(f"direction {direction!r}: expected one of {SCALING_DIRECTIONS}")
        if reason not in SCALING_REASONS:
            raise ValueError(f"scaling reason {reason!r}: expected one of {SCALING_REASONS}")
        key = (direction, reason)
        self._decisions[key] = self._decisions.get(key, 0) + 1

    # ---- signals for the autoscaler (computed when read) ----

    @property
    def ongoing_requests(self) -> int:
        """Requests admitted and not yet answered, as last reported by ``set_in_flight``."""
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        """Rows waiting, as last reported by ``set_queue_depth``."""
        return self._queue_depth

    def goodput_per_s(self) -> float:
        """Good requests per second over the sliding window."""
        return self._good.rate(self._clock.now())

    def slo_attainment(self) -> float | None:
        """Good / eligible requests over the window; None when the window holds none."""
        now = self._clock.now()
        eligible = self._eligible.total(now)
        return self._good.total(now) / eligible if eligible else None

    def batch_fill_ratio(self) -> float | None:
        """Rows batched / batch capacity over the window; None when no batch ran in it."""
        now = self._clock.now()
        capacity = self._batch_capacity.total(now)
        return self._batch_rows.total(now) / capacity if capacity else None

    def utilization(self) -> float | None:
        """Busy / provisioned replica-seconds over the window; None without replicas."""
        provisioned = self.cost.window_replica_seconds()
        if provisioned <= 0:
            return None
        return self._busy.total(self._clock.now()) / provisioned

    # ---- exposition ----

    def export(self, out: Exposition) -> None:
        """Add this model's samples to one scrape's families."""
        n = self.name
        for outcome, count in self._outcomes.items():
            out.requests.add_metric([n, outcome], count)
        out.inferences.add_metric([n], self.cost.inferences_total)
        out.good_requests.add_metric([n], self._good_total)
        out.busy_seconds.add_metric([n], self._busy_total)
        out.queue_depth.add_metric([n], self._queue_depth)
        out.in_flight.add_metric([n], self._in_flight)
        out.replicas.add_metric([n], self._replicas)
        out.replicas_desired.add_metric([n], self._replicas_desired)
        out.shed.add_metric([n], self._shed)
        for reason, count in self._restarts.items():
            out.replica_restarts.add_metric([n, reason], count)
        for (direction, reason), count in sorted(self._decisions.items()):
            out.scaling_decisions.add_metric([n, direction, reason], count)
        self._export_histograms(out)
        self._export_signals(out)

    def _export_histograms(self, out: Exposition) -> None:
        n = self.name
        for family, histogram in (
            (out.request_duration, self._request_duration),
            (out.compute_duration, self._compute_duration),
            (out.batch_size, self._batch_size),
        ):
            family.add_metric([n], histogram.buckets(), histogram.sum)
        for priority, histogram in sorted(self._queue_duration.items()):
            out.queue_duration.add_metric([n, str(priority)], histogram.buckets(), histogram.sum)

    def _export_signals(self, out: Exposition) -> None:
        """The windowed and integrated figures; a ratio without a denominator is left out."""
        n = self.name
        out.goodput.add_metric([n], self.goodput_per_s())
        out.cost.add_metric([n], self.cost.cost_total())
        out.price_per_hour.add_metric([n], self.cost.price_per_hour)
        optional = (
            (out.slo_attainment, self.slo_attainment()),
            (out.batch_fill_ratio, self.batch_fill_ratio()),
            (out.utilization, self.utilization()),
            (out.cost_per_million, self.cost.cost_per_million()),
            (out.slo_target, self.slo_target_s),
        )
        for family, value in optional:
            if value is not None:
                family.add_metric([n], value)
