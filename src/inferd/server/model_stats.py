"""Triton's statistics extension: ``GET /v2/models/stats`` and ``/v2/models/{name}/stats``.

tritonclient's ``get_inference_statistics`` reads it, and Triton's perf_analyzer uses it for
its server-side breakdown. inferd times a batch as one round trip to its replica, so the whole
of it is ``compute_infer``; ``compute_input`` and ``compute_output`` stay zero rather than
carry a made-up split. inferd has no response cache: ``cache_hit`` and ``cache_miss`` are zero.
"""

from __future__ import annotations

from typing import Any

from inferd.metrics.inference_stats import Duration, InferenceStats

_NONE: dict[str, int] = {"count": 0, "ns": 0}


def triton_model_stats(
    name: str, version: str, stats: InferenceStats, last_inference_ms: int
) -> dict[str, Any]:
    """One entry of ``model_stats``; ``last_inference_ms`` in Unix milliseconds, 0 for never."""
    return {
        "name": name,
        "version": version,
        "last_inference": last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": stats.success.to_json(),
            "fail": stats.fail.to_json(),
            "queue": stats.queue.to_json(),
            "compute_input": _NONE,
            "compute_infer": stats.compute.to_json(),
            "compute_output": _NONE,
            "cache_hit": _NONE,
            "cache_miss": _NONE,
        },
        "batch_stats": [_batch(size, stats.batches[size]) for size in sorted(stats.batches)],
    }


def _batch(size: int, duration: Duration) -> dict[str, Any]:
    return {
        "batch_size": size,
        "compute_input": _NONE,
        "compute_infer": duration.to_json(),
        "compute_output": _NONE,
    }
