"""A small python model folder for the tuner's unit tests (discovered, never served here)."""

from __future__ import annotations

from pathlib import Path

import pytest

MODEL_TOML = """\
name = "echo"
backend = "python"
entry_point = "model.py:Echo"
isolation = "thread"
price_per_hour = 2.5

[batching]
max_batch_size = 256
slo_p99_ms = 30
timeout_ms = 5000

[autoscaling]
max_replicas = 4

[parameters]
scale = 2.0
nested = { a = 1, "odd key" = "x" }

[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 16]

[[outputs]]
name = "output"
datatype = "FP32"
shape = [-1, 16]
"""

MODEL_PY = """\
class Echo:
    def __init__(self, *args, **kwargs):
        pass

    def predict(self, inputs):
        return {"output": inputs["input"]}
"""


@pytest.fixture
def echo_model(tmp_path: Path) -> Path:
    """An echo model folder with SLO mode, autoscaling and parameters in its model.toml."""
    folder = tmp_path / "models" / "echo"
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(MODEL_TOML)
    (folder / "model.py").write_text(MODEL_PY)
    return folder
