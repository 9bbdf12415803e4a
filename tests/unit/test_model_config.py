"""Triton's model configuration document, built from inferd's ModelConfig (pure)."""

from __future__ import annotations

from pathlib import Path

from inferd.config import AutoscalingConfig, BatchingConfig, ModelConfig, TensorSpec
from inferd.server.model_config import triton_model_config


def test_an_unbatched_model_keeps_full_dims_and_has_no_dynamic_batching() -> None:
    config = ModelConfig(
        name="tok",
        path=Path("/m"),
        backend="python",
        inputs=(TensorSpec("text", "BYTES", (3,)),),
        outputs=(TensorSpec("ids", "INT64", (3, -1)),),
        batching=BatchingConfig(max_batch_size=0),
        device="cpu",
        parameters={"vocab": "v.txt", "lower": True},
    )
    doc = triton_model_config(config)
    assert doc["max_batch_size"] == 0
    assert doc["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [3]}]
    assert doc["output"] == [{"name": "ids", "data_type": "TYPE_INT64", "dims": [3, -1]}]
    assert "dynamic_batching" not in doc
    assert doc["instance_group"] == [{"name": "tok", "kind": "KIND_CPU", "count": 1}]
    assert doc["parameters"]["vocab"] == {"string_value": "v.txt"}
    assert doc["parameters"]["lower"] == {"string_value": "True"}


def test_a_batched_model_drops_the_batch_axis_and_lists_its_batching() -> None:
    config = ModelConfig(
        name="m",
        path=Path("/m"),
        backend="onnx",
        inputs=(TensorSpec("x", "FP16", (-1, 8, 8)),),
        outputs=(TensorSpec("y", "BF16", (-1,)),),
        batching=BatchingConfig(
            max_batch_size=32,
            max_queue_delay_ms=0.25,
            preferred_batch_sizes=(8, 16),
            slo_p99_ms=40.0,
            priority_levels=2,
            timeout_ms=1500.0,
        ),
        instances=3,
        device="cuda:0",
        autoscaling=AutoscalingConfig(min_replicas=0, max_replicas=4),
    )
    doc = triton_model_config(config)
    assert doc["input"][0] == {"name": "x", "data_type": "TYPE_FP16", "dims": [8, 8]}
    assert doc["output"][0] == {"name": "y", "data_type": "TYPE_BF16", "dims": []}
    batching = doc["dynamic_batching"]
    assert batching["preferred_batch_size"] == [8, 16]
    assert batching["max_queue_delay_microseconds"] == 250
    assert batching["priority_levels"] == 2
    assert batching["default_queue_policy"]["default_timeout_microseconds"] == 1_500_000
    assert doc["instance_group"][0] == {"name": "m", "kind": "KIND_GPU", "count": 3}
    assert doc["parameters"]["slo_p99_ms"] == {"string_value": "40"}
    assert doc["parameters"]["send_ahead"] == {"string_value": "true"}
    assert doc["parameters"]["autoscaling_max_replicas"] == {"string_value": "4"}
