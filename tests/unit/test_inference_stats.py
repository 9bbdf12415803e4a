"""Triton-style cumulative statistics: counted by ModelMetrics, shaped by server/model_stats."""

from __future__ import annotations

from inferd.clock import FakeClock
from inferd.metrics.model_metrics import ModelMetrics
from inferd.server.model_stats import triton_model_stats


def test_requests_and_batches_are_counted_as_triton_reports_them() -> None:
    clock = FakeClock(100.0)
    metrics = ModelMetrics("m", clock)
    metrics.observe_batch(rows=4, max_rows=8, compute_s=0.010)
    metrics.observe_batch(rows=4, max_rows=8, compute_s=0.012)
    metrics.observe_batch(rows=1, max_rows=8, compute_s=0.003)
    for _ in range(3):
        metrics.observe_request("success", total_s=0.020, queue_s=0.005, compute_s=0.010, rows=3)
    metrics.observe_request("shed", total_s=0.001, queue_s=0.0, compute_s=0.0, rows=0)
    metrics.observe_request("client_error", total_s=0.002, queue_s=0.0, compute_s=0.0, rows=0)

    answered = metrics.last_inference_unix_ms()
    clock.advance(60.0)  # a minute later by the clock: the answer lies a minute further back
    assert abs(metrics.last_inference_unix_ms() - (answered - 60_000)) < 1_000
    doc = triton_model_stats("m", "1", metrics.stats, metrics.last_inference_unix_ms())
    assert doc["inference_count"] == 9 and doc["execution_count"] == 3
    assert doc["last_inference"] > 0
    stats = doc["inference_stats"]
    assert stats["success"] == {"count": 3, "ns": 60_000_000}
    assert stats["fail"] == {"count": 2, "ns": 3_000_000}
    assert stats["queue"] == {"count": 3, "ns": 15_000_000}
    assert stats["compute_infer"] == {"count": 3, "ns": 30_000_000}
    assert stats["compute_input"] == {"count": 0, "ns": 0}  # folded into compute_infer
    assert [b["batch_size"] for b in doc["batch_stats"]] == [1, 4]
    assert doc["batch_stats"][1]["compute_infer"] == {"count": 2, "ns": 22_000_000}


def test_a_model_never_called_reports_zeros() -> None:
    idle = ModelMetrics("idle", FakeClock())
    doc = triton_model_stats("idle", "1", idle.stats, idle.last_inference_unix_ms())
    assert doc["last_inference"] == 0 and doc["inference_count"] == 0
    assert doc["inference_stats"]["success"] == {"count": 0, "ns": 0}
    assert doc["batch_stats"] == []
