"""Every metric family inferd exports: name, type, help and labels, built fresh for each scrape.

Each ``ModelMetrics.export`` adds its samples to one ``Exposition``; the registry's collector
yields its families. Names and meanings are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)


def _counter(name: str, help_text: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, labels=["model", *labels])


def _gauge(name: str, help_text: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, labels=["model", *labels])


def _histogram(name: str, help_text: str, *labels: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, help_text, labels=["model", *labels])


@dataclass(slots=True)
class Exposition:
    """The families of one scrape, each labelled by ``model`` first."""

    requests: CounterMetricFamily
    inferences: CounterMetricFamily
    good_requests: CounterMetricFamily
    request_duration: HistogramMetricFamily
    queue_duration: HistogramMetricFamily
    compute_duration: HistogramMetricFamily
    batch_size: HistogramMetricFamily
    batch_fill_ratio: GaugeMetricFamily
    busy_seconds: CounterMetricFamily
    utilization: GaugeMetricFamily
    queue_depth: GaugeMetricFamily
    in_flight: GaugeMetricFamily
    replicas: GaugeMetricFamily
    replicas_desired: GaugeMetricFamily
    replica_restarts: CounterMetricFamily
    shed: CounterMetricFamily
    scaling_decisions: CounterMetricFamily
    goodput: GaugeMetricFamily
    slo_attainment: GaugeMetricFamily
    slo_target: GaugeMetricFamily
    cost: CounterMetricFamily
    cost_per_million: GaugeMetricFamily
    price_per_hour: GaugeMetricFamily

    def families(self) -> list[Metric]:
        """All families, in declaration order."""
        return [getattr(self, f.name) for f in fields(self)]


def new_exposition() -> Exposition:
    """Empty families, ready for each model to add its samples."""
    return Exposition(
        requests=_counter("inferd_requests", "Requests by outcome.", "outcome"),
        inferences=_counter("inferd_inferences", "Inferences (rows) answered successfully."),
        good_requests=_counter(
            "inferd_good_requests", "Successful requests within their deadline and the target."
        ),
        request_duration=_histogram(
            "inferd_request_duration_seconds", "Arrival to outcome, every outcome."
        ),
        queue_duration=_histogram(
            "inferd_queue_duration_seconds", "Time waiting in the queue, by priority.", "priority"
        ),
        compute_duration=_histogram(
            "inferd_compute_duration_seconds", "Compute time of the batch each request rode in."
        ),
        batch_size=_histogram("inferd_batch_size", "Rows per computed batch."),
        batch_fill_ratio=_gauge(
            "inferd_batch_fill_ratio", "Rows batched / batch capacity over the window."
        ),
        busy_seconds=_counter("inferd_busy_seconds", "Replica-seconds spent computing batches."),
        utilization=_gauge(
            "inferd_replica_utilization_ratio", "Busy / provisioned replica-seconds, window."
        ),
        queue_depth=_gauge("inferd_queue_depth_rows", "Rows waiting in the queue."),
        in_flight=_gauge("inferd_in_flight_requests", "Requests admitted, not yet answered."),
        replicas=_gauge("inferd_replicas", "Replicas running."),
        replicas_desired=_gauge("inferd_replicas_desired", "Replicas the autoscaler wants."),
        replica_restarts=_counter("inferd_replica_restarts", "Replica restarts.", "reason"),
        shed=_counter("inferd_shed", "Load-shedding events (queue full)."),
        scaling_decisions=_counter(
            "inferd_autoscaler_decisions", "Autoscaler decisions.", "direction", "reason"
        ),
        goodput=_gauge("inferd_goodput_per_second", "Good requests per second over the window."),
        slo_attainment=_gauge(
            "inferd_slo_attainment_ratio", "Good / non-client-error requests over the window."
        ),
        slo_target=_gauge("inferd_slo_target_seconds", "The model's latency target."),
        cost=_counter("inferd_cost", "Currency units spent on replicas so far."),
        cost_per_million=_gauge(
            "inferd_cost_per_million_inferences", "Window cost / window inferences x 1e6."
        ),
        price_per_hour=_gauge("inferd_price_per_hour", "Price of one replica-hour."),
    )
