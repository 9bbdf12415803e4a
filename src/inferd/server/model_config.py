"""Triton's model configuration document, ``GET /v2/models/{name}/config``, from inferd's.

tritonclient's ``get_model_config`` reads it: the fields are those of Triton's ``ModelConfig``
protobuf in its JSON form. As in Triton, a batched model's ``dims`` leave out the batch axis.
What Triton has no field for (SLO mode, autoscaling, precision, isolation) is listed under
``parameters``, where Triton keeps backend settings, with the model's own ``[parameters]``.
"""

from __future__ import annotations

from typing import Any

from inferd.config import ModelConfig, TensorSpec


def triton_model_config(config: ModelConfig) -> dict[str, Any]:
    """``config`` as Triton's model configuration JSON."""
    batching = config.batching
    document: dict[str, Any] = {
        "name": config.name,
        "platform": f"inferd_{config.backend}",
        "backend": config.backend,
        "max_batch_size": batching.max_batch_size,
        "input": [_tensor(spec, config.batched) for spec in config.inputs],
        "output": [_tensor(spec, config.batched) for spec in config.outputs],
        "instance_group": [
            {"name": config.name, "kind": _kind(config.device), "count": config.instances}
        ],
        "parameters": {k: {"string_value": v} for k, v in _parameters(config).items()},
    }
    if config.batched:
        document["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_ms * 1000),
                "allow_timeout_override": True,
                # Triton counts requests here; inferd bounds the queue in rows.
                "max_queue_size": batching.max_queue_rows,
            },
        }
    return document


def _tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = spec.shape[1:] if batched and spec.shape else spec.shape
    return {"name": spec.name, "data_type": _triton_type(spec.datatype), "dims": list(dims)}


def _triton_type(datatype: str) -> str:
    # Triton's enum spells every v2 datatype with a TYPE_ prefix, except BYTES: TYPE_STRING.
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _kind(device: str) -> str:
    if device == "auto":
        return "KIND_AUTO"
    return "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"


def _parameters(config: ModelConfig) -> dict[str, str]:
    found = {
        "precision": config.precision,
        "isolation": config.isolation,
        "idempotent": str(config.idempotent).lower(),
        "variable_dims": config.batching.variable_dims,
        "send_ahead": str(config.batching.send_ahead).lower(),
    }
    if config.batching.slo_p99_ms > 0:
        found["slo_p99_ms"] = f"{config.batching.slo_p99_ms:g}"
    if config.autoscaling is not None:
        found["autoscaling_min_replicas"] = str(config.autoscaling.min_replicas)
        found["autoscaling_max_replicas"] = str(config.autoscaling.max_replicas)
    if config.price_per_hour is not None:
        found["price_per_hour"] = f"{config.price_per_hour:g}"
    found.update({str(k): str(v) for k, v in config.parameters.items()})
    return found
