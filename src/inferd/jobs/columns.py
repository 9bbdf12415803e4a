"""Which columns of the input feed which input of a tensor model, and turning rows into tensors.

The rule, for each model input, first match wins:

1. ``--input NAME=COL`` or ``--input NAME=COL1,COL2,...``: these columns, in this order;
2. a column with the input's name;
3. for a model with a single input: every numeric scalar column, in file order (the id column
   left out), side by side as the row's feature vector.

One column is taken as it is: a list (or array) column gives each row's tensor, a scalar column
a single value. Several columns are placed side by side as a vector. The id column
(``--id-column``, else a column named ``id`` if there is one) is passed through to the output;
without one the output names each row by its index, ``row``.

A row whose values do not fit (the wrong number of features, a value that is not a number)
fails alone: its tensor is filled with zeros so that every other row is computed exactly where
it would have been, and its output is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from inferd.config import TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import ConfigError
from inferd.jobs.readers import Columns, RowBatch

Tensors = dict[str, np.ndarray]
ROW_INDEX: Final = "row"
DEFAULT_ID: Final = "id"
NUMERIC_SHARE: Final = 0.9


@dataclass(frozen=True, slots=True)
class InputSource:
    """Where one model input comes from."""

    spec: TensorSpec
    columns: tuple[str, ...]
    kind: str
    """``vector``: the columns' numbers side by side; ``scalar``: one number per row;
    ``tensor``: the column holds each row's array (or string, for BYTES)."""

    def describe(self) -> str:
        names = ", ".join(self.columns[:3]) + (", ..." if len(self.columns) > 3 else "")
        if self.kind == "vector":
            return f"input {self.spec.name!r} <- {len(self.columns)} columns ({names})"
        return f"input {self.spec.name!r} <- column {names}"


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Every input's source, and the id column passed through (None: the row index)."""

    sources: tuple[InputSource, ...]
    id_column: str | None

    @property
    def id_name(self) -> str:
        return self.id_column or ROW_INDEX

    def describe(self) -> str:
        """One line per input, for logs and ``--estimate``."""
        return "; ".join(s.describe() for s in self.sources)


def resolve(
    inputs: tuple[TensorSpec, ...],
    head: Columns,
    overrides: Mapping[str, tuple[str, ...]],
    id_column: str | None,
) -> ColumnMapping:
    """Map the model's inputs to columns of ``head`` (the first rows of the input)."""
    names = list(head)
    if id_column is not None and id_column not in head:
        raise ConfigError(f"--id-column {id_column}: no such column; columns: {_list(names)}")
    id_column = id_column or (DEFAULT_ID if DEFAULT_ID in head else None)
    known = {s.name for s in inputs}
    for name in overrides:
        if name not in known:
            raise ConfigError(f"--input {name}=...: the model has no input {name!r}; "
                              f"its inputs: {_list(sorted(known))}")  # fmt: skip
    sources = tuple(_source(spec, inputs, head, overrides, id_column) for spec in inputs)
    return ColumnMapping(sources, id_column)


def _source(
    spec: TensorSpec,
    inputs: tuple[TensorSpec, ...],
    head: Columns,
    overrides: Mapping[str, tuple[str, ...]],
    id_column: str | None,
) -> InputSource:
    if spec.name in overrides:
        columns = overrides[spec.name]
        missing = [c for c in columns if c not in head]
        if missing:
            raise ConfigError(f"--input {spec.name}=...: no column {missing[0]!r}; "
                              f"columns: {_list(list(head))}")  # fmt: skip
    elif spec.name in head:
        columns = (spec.name,)
    elif len(inputs) == 1:
        columns = tuple(c for c, v in head.items() if c != id_column and _is_numeric(v))
        if not columns:
            raise ConfigError(
                f"input {spec.name!r}: no column named {spec.name!r} and no numeric column; "
                f"columns: {_list(list(head))}; pass --input {spec.name}=COL[,COL...]"
            )
    else:
        raise ConfigError(
            f"input {spec.name!r}: no column named {spec.name!r}; columns: "
            f"{_list(list(head))}; pass --input {spec.name}=COL[,COL...]"
        )
    if len(columns) > 1:
        kind = "vector"
    elif spec.datatype != "BYTES" and _is_numeric(head[columns[0]]):
        kind = "scalar"
    else:
        kind = "tensor"
    source = InputSource(spec, columns, kind)
    _check_shape(source)
    return source


def _check_shape(source: InputSource) -> None:
    shape, width = source.spec.shape, len(source.columns)
    if source.kind == "vector" and not (len(shape) == 2 and shape[1] in (-1, width)):
        raise ConfigError(
            f"{source.describe()}: {width} values per row, but the input's shape is "
            f"{list(shape)}; choose its columns with --input {source.spec.name}=COL,..."
        )
    if source.kind == "scalar" and not (len(shape) == 1 or shape[1:] in ((1,), (-1,))):
        raise ConfigError(
            f"{source.describe()}: one number per row, but the input's shape is {list(shape)}; "
            f"choose its columns with --input {source.spec.name}=COL,..."
        )


def _is_numeric(column: np.ndarray) -> bool:
    if column.ndim != 1:
        return False
    if column.dtype.kind in "iufb":
        return True
    if column.dtype.kind != "O" or not len(column):
        return False
    # Text cells (CSV): numeric if nearly all parse, so one bad value fails its row, not the column.
    parsed = 0
    for value in column:
        try:
            _number(value)
            parsed += 1
        except (ValueError, TypeError):
            pass
    return parsed >= NUMERIC_SHARE * len(column)


def _list(names: list[str]) -> str:
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "") if names else "none"


# --- rows to tensors ---------------------------------------------------------------------


def to_tensors(mapping: ColumnMapping, batch: RowBatch) -> tuple[Tensors, dict[int, str]]:
    """The model's inputs for every row of ``batch``, and the rows that failed (offset: why)."""
    bad = dict(batch.bad)
    tensors = {}
    for source in mapping.sources:
        column = _column(batch, source.columns[0])
        if source.kind == "vector":
            tensor = _vector(source, batch, bad)
        elif source.kind == "scalar":
            tensor = _scalars(column, _dtype(source), source.columns[0], bad)
            tensor = tensor if len(source.spec.shape) == 1 else tensor.reshape(-1, 1)
        elif source.spec.datatype == "BYTES":
            tensor = _bytes(column, source.columns[0], bad)
        else:
            tensor = _arrays(source, column, bad)
        tensors[source.spec.name] = tensor
    return tensors, dict(sorted(bad.items()))


def _column(batch: RowBatch, name: str) -> np.ndarray:
    """The column, or all None where no row of this chunk has it (JSON Lines)."""
    column = batch.columns.get(name)
    return column if column is not None else np.full(batch.rows, None, dtype=object)


def _dtype(source: InputSource) -> np.dtype:
    return to_numpy_dtype(source.spec.datatype)


def _vector(source: InputSource, batch: RowBatch, bad: dict[int, str]) -> np.ndarray:
    dtype = _dtype(source)
    out = np.zeros((batch.rows, len(source.columns)), dtype=dtype)
    for k, name in enumerate(source.columns):
        out[:, k] = _scalars(_column(batch, name), dtype, name, bad)
    return out


def _scalars(column: np.ndarray, dtype: np.dtype, name: str, bad: dict[int, str]) -> np.ndarray:
    """A 1-D column as ``dtype``; a value that is not a number fails its row (and reads 0)."""
    if not bad:
        try:
            return np.asarray(column, dtype=dtype)
        except (ValueError, TypeError):
            pass
    out = np.zeros(len(column), dtype=dtype)
    for i, value in enumerate(column):
        if i in bad:
            continue
        try:
            out[i] = _number(value)
        except (ValueError, TypeError):
            bad[i] = f"column {name!r}: {_short(value)} is not a number"
    return out


def _number(value: Any) -> float:
    if isinstance(value, list | dict | bool) or value is None:
        raise TypeError(type(value).__name__)
    return float(value)


def _arrays(source: InputSource, column: np.ndarray, bad: dict[int, str]) -> np.ndarray:
    """A column holding each row's array; the fast path converts the chunk in one go."""
    dtype = _dtype(source)
    if not bad:
        try:
            fast = np.asarray(column.tolist() if column.dtype.kind == "O" else column, dtype=dtype)
            if len(fast) == len(column) and _fits(fast.shape[1:], source.spec.shape[1:]):
                return fast
        except (ValueError, TypeError):
            pass
    return _rows_one_by_one(source, column, dtype, bad)


def _rows_one_by_one(
    source: InputSource, column: np.ndarray, dtype: np.dtype, bad: dict[int, str]
) -> np.ndarray:
    """The slow path, for a chunk with a bad row: convert and check each row alone."""
    inner = source.spec.shape[1:]
    rows: dict[int, np.ndarray] = {}
    for i, value in enumerate(column):
        if i in bad:
            continue
        if value is None:
            bad[i] = f"column {source.columns[0]!r}: no value"
            continue
        try:
            array = np.asarray(value, dtype=dtype)
        except (ValueError, TypeError):
            bad[i] = f"column {source.columns[0]!r}: {_short(value)} is not an array of numbers"
            continue
        if not _fits(array.shape, inner):
            bad[i] = (
                f"column {source.columns[0]!r}: shape {list(array.shape)}, but input "
                f"{source.spec.name!r} takes {list(inner)} per row (-1 = any size)"
            )
            continue
        rows[i] = array
    shape = next(iter(rows.values())).shape if rows else tuple(max(d, 1) for d in inner)
    out = np.zeros((len(column), *shape), dtype=dtype)
    for i, array in rows.items():
        if array.shape != shape:
            bad[i] = (
                f"column {source.columns[0]!r}: shape {list(array.shape)} differs from "
                f"{list(shape)}, the shape of the other rows of its chunk"
            )
            continue
        out[i] = array
    return out


def _bytes(column: np.ndarray, name: str, bad: dict[int, str]) -> np.ndarray:
    out = np.empty(len(column), dtype=object)
    for i, value in enumerate(column):
        if isinstance(value, str):
            out[i] = value.encode()
        elif isinstance(value, bytes):
            out[i] = value
        elif isinstance(value, list | dict) and i not in bad:
            out[i] = orjson.dumps(value)  # chat messages, for an LLM job
        else:
            out[i] = b""
            bad.setdefault(i, f"column {name!r}: {_short(value)} is not a string")
    return out


def _fits(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    return len(shape) == len(spec) and all(w in (-1, g) for w, g in zip(spec, shape, strict=True))


def _short(value: Any) -> str:
    if value is None:
        return "no value"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
