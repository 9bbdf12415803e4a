"""Candidate model folders: the model's files linked, its model.toml rewritten and still valid."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

from inferd.repository import discover
from inferd.tune.candidate import candidate_table, dump_toml, write_candidate
from inferd.tune.space import tensor_space


def test_candidate_folder_serves_the_same_model_with_the_candidate_values(
    tmp_path: Path, echo_model: Path
) -> None:
    model = discover([echo_model])[0].config
    assert model is not None
    space = tensor_space(2, 64, (0.0, 2.0))
    candidate = space.candidate({"instances": 2, "max_batch_size": 16, "max_queue_delay_ms": 2.0})
    folder = write_candidate(model, candidate, space, tmp_path / "trial" / "echo")
    assert (folder / "model.py").is_symlink()
    assert (folder / "model.py").resolve() == (echo_model / "model.py").resolve()
    entry = discover([folder])[0]
    assert entry.config is not None, entry.error
    config = entry.config
    assert config.name == "echo"
    assert config.instances == 2
    assert config.batching.max_batch_size == 16
    assert config.batching.max_queue_delay_ms == 2.0
    assert config.batching.slo_p99_ms == 0.0  # SLO mode off: the trial measures fixed settings
    assert config.autoscaling is None
    assert config.batching.timeout_ms == 5000  # everything else as the model had it
    assert config.price_per_hour == 2.5
    assert config.parameters == {"scale": 2.0, "nested": {"a": 1, "odd key": "x"}}
    assert [s.name for s in config.inputs] == ["input"]


def test_a_bare_model_file_gets_a_table_of_its_own(tmp_path: Path, echo_model: Path) -> None:
    (tmp_path / "other.txt").write_text("not part of the model")
    (tmp_path / "tiny.py").write_text((echo_model / "model.py").read_text())
    model = discover([tmp_path / "tiny.py"])[0].config
    assert model is not None
    space = tensor_space(1, 8, (0.0,))
    table = candidate_table(model, space.first(), space)
    assert table == {
        "name": "tiny",
        "backend": "python",
        "file": "tiny.py",
        "instances": 1,
        "batching": {"max_batch_size": 1, "max_queue_delay_ms": 0.0},
    }
    folder = write_candidate(model, space.first(), space, tmp_path / "trial" / "tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["model.toml", "tiny.py"]


def test_dump_toml_round_trips_through_tomllib() -> None:
    table = {
        "name": 'quote " and \\ and ünïcode',
        "flag": False,
        "count": 3,
        "ratio": 0.1,
        "big": float("inf"),
        "when": datetime.date(2024, 1, 2),
        "list": [1, 2.5, "x"],
        "inline": [{"a": 1}, 2],
        "table": {"x": 1, "sub": {"y": [1, 2]}},
        "rows": [{"name": "a", "shape": [-1, 2]}, {"name": "b", "shape": [3]}],
    }
    assert tomllib.loads(dump_toml(table)) == table
