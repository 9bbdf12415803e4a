"""How many replicas a job runs: one per core, as memory allows, unless the model says."""

from __future__ import annotations

from pathlib import Path

from inferd.config import AutoscalingConfig, ModelConfig
from inferd.jobs.local import job_replicas

MB = 1 << 20


def model(tmp_path: Path, size: int, **kwargs: object) -> ModelConfig:
    (tmp_path / "model.onnx").write_bytes(b"\0" * size)
    return ModelConfig("m", tmp_path, "onnx", file="model.onnx", **kwargs)  # type: ignore[arg-type]


def test_one_replica_per_core_when_memory_allows(tmp_path: Path) -> None:
    assert job_replicas(model(tmp_path, MB), cpus=8, free_bytes=64 << 30) == 8


def test_no_more_replicas_than_half_the_free_memory_holds(tmp_path: Path) -> None:
    # 512 MB runtime + 512 MB model per replica; 4 GB free -> 2 GB for replicas -> 2
    assert job_replicas(model(tmp_path, 512 * MB), cpus=8, free_bytes=4 << 30) == 2
    assert job_replicas(model(tmp_path, 512 * MB), cpus=8, free_bytes=1 << 30) == 1


def test_the_models_own_settings_win(tmp_path: Path) -> None:
    assert job_replicas(model(tmp_path, MB, instances=3), cpus=8, free_bytes=64 << 30) == 3
    assert job_replicas(model(tmp_path, MB, threads=4), cpus=8, free_bytes=64 << 30) == 1
    scaling = AutoscalingConfig(min_replicas=1, max_replicas=4)
    assert job_replicas(model(tmp_path, MB, autoscaling=scaling), 8, 64 << 30) == 1
