"""Checks a request's tensors against a model's declared signature, with messages that say why."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import InvalidRequest


class SignatureCheck:
    """A model's input signature, prepared once, checked on every request.

    The common case (the right names, datatypes and fixed dims) is a few comparisons; the
    precise error messages are built only when something is wrong.
    """

    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._names = frozenset(spec.name for spec in config.inputs)
        # name -> (datatype, rank, the dims that must match: (axis, size))
        self._expected = {
            spec.name: (
                spec.datatype,
                len(spec.shape),
                tuple((axis, size) for axis, size in enumerate(spec.shape) if size != -1),
            )
            for spec in config.inputs
        }

    def rows(self, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> int:
        """Validate names, datatypes and shapes; return the batch size (1 if unbatched)."""
        if inputs.keys() != self._names:
            check_inputs(self._config, inputs, datatypes)  # raises, naming the input
        rows = -1
        for name, array in inputs.items():
            datatype, rank, fixed = self._expected[name]
            shape = array.shape
            if (
                datatypes.get(name, datatype) != datatype
                or len(shape) != rank
                or any(shape[axis] != size for axis, size in fixed)
                or (rows not in (-1, shape[0]) and self._config.batched)
                or (self._config.batched and shape[0] == 0)
            ):
                return check_inputs(self._config, inputs, datatypes)  # raises, naming why
            rows = shape[0] if rank else 1
        return rows if self._config.batched else 1


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
