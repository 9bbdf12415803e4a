"""Writing a job's output: one part per chunk, then the parts merged into the output file.

The output holds the id column (or ``row``, the input row index) and one column per model
output. A per-row array is a list in JSON Lines, a fixed-size list column in Parquet, and in
CSV one column per element (``NAME_0``, ``NAME_1``, ... in row-major order); a per-row scalar is
a plain value. Failed rows are left out of the output and written, with their error, to the
errors file (JSON Lines: ``row``, the id, ``error``).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import orjson

from inferd.errors import ConfigError

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class OutputTable:
    """The successful rows of one chunk: their ids and the model's outputs."""

    id_name: str
    ids: np.ndarray
    outputs: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that failed, and why."""

    row: int
    id: Any
    error: str


class Writer(Protocol):
    """Writes parts of one format and merges them."""

    suffix: str

    def write_part(self, f: BinaryIO, table: OutputTable) -> None: ...

    def merge(self, parts: Iterable[Path], out: BinaryIO) -> None: ...


def writer_for(fmt: str, id_name: str, output_names: tuple[str, ...]) -> Writer:
    """The writer of format ``fmt`` (``formats.FORMATS``)."""
    if fmt == "jsonl":
        return JsonLinesWriter()
    if fmt == "csv":
        return CsvWriter(id_name, output_names)
    return ParquetWriter()


def write_errors(f: BinaryIO, errors: list[RowError], id_name: str) -> None:
    """One JSON line per failed row."""
    for e in errors:
        f.write(orjson.dumps({"row": e.row, id_name: e.id, "error": e.error}, default=str))
        f.write(b"\n")


def concatenate(parts: Iterable[Path], out: BinaryIO) -> None:
    """Append the bytes of each part to ``out``."""
    for part in parts:
        with part.open("rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)


def _plain(values: np.ndarray) -> list[Any]:
    """Python values for JSON (bytes, which JSON lacks, become text)."""
    items = values.tolist()
    if values.dtype.kind == "O":
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in items]
    return list(items)


class JsonLinesWriter:
    """One JSON object per row: ``{"id": ..., "output": [...]}``."""

    suffix = ".jsonl"

    def write_part(self, f: BinaryIO, table: OutputTable) -> None:
        ids = _plain(table.ids)
        columns = {
            name: _plain(v) if v.dtype.kind == "O" else v for name, v in table.outputs.items()
        }
        lines = []
        for i, row_id in enumerate(ids):
            row = {table.id_name: row_id}
            for name, values in columns.items():
                row[name] = values[i]
            lines.append(orjson.dumps(row, option=_NUMPY | orjson.OPT_APPEND_NEWLINE))
        f.write(b"".join(lines))

    def merge(self, parts: Iterable[Path], out: BinaryIO) -> None:
        concatenate(parts, out)


class CsvWriter:
    """A header row, then one row per input row; arrays spread over ``NAME_i`` columns."""

    suffix = ".csv"

    def __init__(self, id_name: str, output_names: tuple[str, ...]) -> None:
        self._id_name = id_name
        self._names = output_names
        self._header: list[str] | None = None

    def write_part(self, f: BinaryIO, table: OutputTable) -> None:
        columns = [np.asarray(_plain(table.ids), dtype=object).astype(str)[:, None]]
        header = [table.id_name]
        for name in self._names:
            values = table.outputs[name]
            flat = values.reshape(len(values), int(np.prod(values.shape[1:])))
            if values.ndim > 1:
                header += [f"{name}_{i}" for i in range(flat.shape[1])]
            else:
                header.append(name)
            if flat.dtype.kind == "O":
                flat = np.asarray([_plain(r) for r in flat], dtype=object)
            columns.append(flat.astype(str))
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)  # every part has it: the merge keeps the first part's only
        writer.writerows(np.hstack(columns).tolist() if table.rows else [])
        f.write(text.getvalue().encode())

    def merge(self, parts: Iterable[Path], out: BinaryIO) -> None:
        wrote_header = False
        for part in parts:
            with part.open("rb") as f:
                header = f.readline()
                if not wrote_header:
                    out.write(header)
                    wrote_header = True
                shutil.copyfileobj(f, out, 1 << 20)
        if not wrote_header:
            out.write((",".join([self._id_name, *self._names]) + "\n").encode())


class ParquetWriter:
    """Parquet: per-row arrays as fixed-size list columns, one row group per chunk."""

    suffix = ".parquet"

    def write_part(self, f: BinaryIO, table: OutputTable) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {table.id_name: _arrow(table.ids)}
        columns |= {name: _arrow(values) for name, values in table.outputs.items()}
        pq.write_table(pa.table(columns), f)

    def merge(self, parts: Iterable[Path], out: BinaryIO) -> None:
        import pyarrow.parquet as pq

        paths = list(parts)
        if not paths:
            return
        # A chunk whose rows all failed has an empty part, whose id column may lack a type.
        rows = [pq.ParquetFile(p).metadata.num_rows for p in paths]
        first = next((p for p, n in zip(paths, rows, strict=True) if n), paths[0])
        writer = pq.ParquetWriter(out, pq.read_schema(first))
        try:
            for path, n in zip(paths, rows, strict=True):
                if n:
                    writer.write_table(pq.read_table(path))
        finally:
            writer.close()


def _arrow(values: np.ndarray) -> Any:
    """A numpy column as a pyarrow array: nested fixed-size lists for per-row arrays."""
    import pyarrow as pa

    if values.dtype.kind == "O":
        if values.ndim == 1:
            return pa.array(_plain(values))
        return pa.array([_plain(row) for row in values.reshape(len(values), -1)])
    array = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(values.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def require_pyarrow(fmt: str, path: Path) -> None:
    """``ConfigError`` early, not after hours of work, if Parquet output cannot be written."""
    if fmt != "parquet":
        return
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{path}: writing Parquet needs pyarrow: pip install 'inferd[jobs]'"
        ) from None
