"""A candidate configuration as a model folder: the model's files linked, ``model.toml`` rewritten.

The tuned model's own ``model.toml`` is read as it is, the candidate's values are set at their
dotted keys (``instances``, ``batching.max_batch_size``, ...), SLO mode and autoscaling are
switched off (a trial measures fixed settings), and the result is written beside links to the
model's files. The model keeps its name, so a trial is served at the same URL.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path
from typing import Any

from inferd.config import MODEL_CONFIG_FILE, ModelConfig, read_toml
from inferd.tune.space import Candidate, SearchSpace

# Keys a trial must not inherit: each would override what the trial measures.
_DROPPED = ("autoscaling", "batching.slo_p99_ms")


def candidate_table(model: ModelConfig, candidate: Candidate, space: SearchSpace) -> dict[str, Any]:
    """The model's ``model.toml`` table with the candidate's values set."""
    data = read_toml(model.source) if model.source is not None else _inferred_table(model)
    data = copy.deepcopy(data)
    data["name"] = model.name
    for dotted in _DROPPED:
        _pop(data, dotted)
    for name, value in candidate.items:
        _set(data, space.dimension(name).toml_key, value)
    return data


def write_candidate(
    model: ModelConfig, candidate: Candidate, space: SearchSpace, folder: Path
) -> Path:
    """Create ``folder`` as the candidate's model folder and return it."""
    folder.mkdir(parents=True)
    for source in _model_files(model):
        (folder / source.name).symlink_to(source.resolve())
    table = candidate_table(model, candidate, space)
    (folder / MODEL_CONFIG_FILE).write_text(dump_toml(table))
    return folder


def _model_files(model: ModelConfig) -> list[Path]:
    if model.source is None and model.file is not None:
        return [model.path / model.file]  # a bare model file: its folder may hold anything
    return [p for p in sorted(model.path.iterdir()) if p.name != MODEL_CONFIG_FILE]


def _inferred_table(model: ModelConfig) -> dict[str, Any]:
    """What a model without a ``model.toml`` would need one to say."""
    table: dict[str, Any] = {"name": model.name, "backend": model.backend}
    if model.file is not None:
        table["file"] = model.file
    if model.entry_point is not None:
        table["entry_point"] = model.entry_point
    return table


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, key = dotted.split(".")
    for name in tables:
        data = data.setdefault(name, {})
    data[key] = value


def _pop(data: dict[str, Any], dotted: str) -> None:
    *tables, key = dotted.split(".")
    for name in tables:
        data = data.get(name, {})
    data.pop(key, None)


# --- TOML out --------------------------------------------------------------------------------


def dump_toml(table: dict[str, Any]) -> str:
    """``table`` as TOML text: scalars first, then sub-tables, then arrays of tables."""
    return "\n".join(_table_lines(table, ())) + "\n"


def _table_lines(table: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if _is_scalar(v)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{_dotted((*path, key))}]", *_table_lines(value, (*path, key))]
    for key, value in table.items():
        if _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_dotted((*path, key))}]]", *_table_lines(item, (*path, key))]
    return lines


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict) and not _is_table_array(value)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(k) for k in path)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
