"""Checks a request's tensors against a model's declared signature, with messages that say why."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import InvalidRequest


def check_inputs(
    config: ModelConfig, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
) -> int:
    """Validate names, datatypes and shapes; return the batch size (1 for unbatched models)."""
    declared = {spec.name: spec for spec in config.inputs}
    missing = [n for n in declared if n not in inputs]
    if missing:
        raise InvalidRequest(
            f"model {config.name!r} expects input {missing[0]!r}; "
            f"it takes {_describe(config.inputs)}"
        )
    unexpected = [n for n in inputs if n not in declared]
    if unexpected:
        raise InvalidRequest(
            f"model {config.name!r} has no input {unexpected[0]!r}; "
            f"it takes {_describe(config.inputs)}"
        )
    rows: int | None = None
    for name, array in inputs.items():
        spec = declared[name]
        _check_datatype(config.name, spec, datatypes.get(name, spec.datatype))
        _check_shape(config, spec, array.shape)
        if config.batched:
            if rows is not None and array.shape[0] != rows:
                raise InvalidRequest(
                    f"model {config.name!r}: inputs disagree on the batch size "
                    f"({rows} rows and {array.shape[0]} rows in {name!r})"
                )
            rows = array.shape[0]
    return rows if rows is not None else 1


def _check_datatype(model: str, spec: TensorSpec, datatype: str) -> None:
    if datatype != spec.datatype:
        raise InvalidRequest(
            f"model {model!r}: input {spec.name!r} must be {spec.datatype}, got {datatype}"
        )


def _check_shape(config: ModelConfig, spec: TensorSpec, shape: tuple[int, ...]) -> None:
    expected = spec.shape
    ok = len(shape) == len(expected) and all(
        want in (-1, got) for want, got in zip(expected, shape, strict=True)
    )
    if config.batched and ok and shape[0] == 0:
        raise InvalidRequest(f"model {config.name!r}: input {spec.name!r} has an empty batch")
    if not ok:
        raise InvalidRequest(
            f"model {config.name!r}: input {spec.name!r} must have shape "
            f"{list(expected)} (-1 = any size), got {list(shape)}"
        )


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name!r} ({s.datatype} {list(s.shape)})" for s in specs) or "no inputs"
