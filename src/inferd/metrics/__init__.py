"""Prometheus metrics, SLO signals and cost per inference (layer 0: stdlib and prometheus_client).

``registry.ServerMetrics`` owns one server's registry and hands out ``ModelMetrics`` per model;
``cost.CostMeter`` prices replica time; ``window.SlidingWindow`` is the per-second ring behind
every windowed figure. Definitions of every metric: ``docs/metrics.md``.
"""
