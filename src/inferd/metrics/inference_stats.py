"""Cumulative per-model counts and durations in the shape of Triton's statistics extension.

``GET /v2/models/{name}/stats`` (tritonclient's ``get_inference_statistics``, which Triton's
perf_analyzer reads) reports these. They are plain running sums, bumped by ``ModelMetrics`` on
the hot path; the Prometheus histograms stay the place for distributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    """How many, and their total time."""

    count: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        """Count one more of ``seconds``."""
        self.count += 1
        self.seconds += seconds

    def to_json(self) -> dict[str, int]:
        """Triton's ``{"count", "ns"}``."""
        return {"count": self.count, "ns": round(self.seconds * 1e9)}


@dataclass(slots=True)
class InferenceStats:
    """One model's cumulative statistics since the server started."""

    success: Duration = field(default_factory=Duration)
    """Requests answered with outputs, and their time in the server."""
    fail: Duration = field(default_factory=Duration)
    """Every other outcome (invalid, shed, timed out, failed), and its time."""
    queue: Duration = field(default_factory=Duration)
    """Successful requests' time waiting for a batch."""
    compute: Duration = field(default_factory=Duration)
    """Successful requests' batch compute time (each request counts its batch's)."""
    inference_count: int = 0
    """Rows computed (Triton counts each item of a batch as one inference)."""
    execution_count: int = 0
    """Batches computed."""
    last_success_at: float | None = None
    """When the last successful request was answered, on the metrics' clock; None: never."""
    batches: dict[int, Duration] = field(default_factory=dict)
    """Per batch size: batches computed and their compute time."""

    def on_success(self, total_s: float, queue_s: float, compute_s: float, now: float) -> None:
        """Count one request answered with outputs at ``now`` (the metrics' clock)."""
        self.success.add(total_s)
        self.queue.add(queue_s)
        self.compute.add(compute_s)
        self.last_success_at = now

    def on_failure(self, total_s: float) -> None:
        """Count one request answered otherwise."""
        self.fail.add(total_s)

    def on_batch(self, rows: int, compute_s: float) -> None:
        """Count one computed batch."""
        self.inference_count += rows
        self.execution_count += 1
        by_size = self.batches.get(rows)
        if by_size is None:
            by_size = self.batches[rows] = Duration()
        by_size.add(compute_s)
