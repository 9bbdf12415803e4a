"""Reading a job's input in chunks of rows, as columns, without holding the file in memory.

Every reader yields ``RowBatch`` es of ``chunk_rows`` rows (the last may be shorter) starting at
any row, so that a resumed job starts where the last one stopped. A column is a numpy array
with one item per row: numbers stay numeric (1-D), a list column whose rows have one length is
2-D, anything else (strings, ragged lists, nulls) is an object array. A row that cannot be read
at all (bad JSON, a CSV row with the wrong number of fields) is reported in ``bad`` and its
cells are None, so that it fails alone.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from inferd.errors import ConfigError

Columns = dict[str, np.ndarray]


@dataclass(slots=True)
class RowBatch:
    """Rows ``[start, start + rows)`` of the input, as columns."""

    start: int
    rows: int
    columns: Columns
    bad: dict[int, str] = field(default_factory=dict)
    """Row offset in this batch -> why it could not be read."""


class Reader(Protocol):
    """An input file, read in chunks of rows."""

    def total_rows(self) -> tuple[int, bool]:
        """The number of rows and whether it is exact (else counted from lines)."""
        ...

    def chunks(self, start: int, chunk_rows: int) -> Iterator[RowBatch]:
        """Batches of ``chunk_rows`` rows from row ``start`` to the end."""
        ...


def open_reader(path: Path, fmt: str) -> Reader:
    """The reader of ``path`` in format ``fmt`` (see ``formats.FORMATS``)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    if fmt == "jsonl":
        return JsonLinesReader(path)
    if fmt == "csv":
        return CsvReader(path)
    return ParquetReader(path)


def object_column(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (lists stay whole items, not a second axis)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class JsonLinesReader:
    """One JSON object per line; blank lines are not rows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def total_rows(self) -> tuple[int, bool]:
        return _count_lines(self.path), False

    def chunks(self, start: int, chunk_rows: int) -> Iterator[RowBatch]:
        with self.path.open("rb") as f:
            lines = (line for line in f if line.strip())
            for _ in itertools.islice(lines, start):
                pass
            row = start
            while batch := list(itertools.islice(lines, chunk_rows)):
                yield _json_batch(row, batch)
                row += len(batch)


def _json_batch(start: int, lines: list[bytes]) -> RowBatch:
    records: list[dict[str, Any]] = []
    bad: dict[int, str] = {}
    for i, line in enumerate(lines):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            record, bad[i] = {}, f"not valid JSON: {e}"
        if not isinstance(record, dict):
            record, bad[i] = {}, "not a JSON object"
        records.append(record)
    keys = dict.fromkeys(k for record in records for k in record)
    columns = {k: _json_column([r.get(k) for r in records]) for k in keys}
    return RowBatch(start, len(lines), columns, bad)


def _json_column(values: list[Any]) -> np.ndarray:
    if all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    if all(type(v) in (int, float) for v in values):
        return np.array(values, dtype=np.float64)
    return object_column(values)


class CsvReader:
    """Comma-separated values with a header row; blank lines are not rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise ConfigError(f"{path}: no header row (the first row names the columns)")
        self.header = header

    def total_rows(self) -> tuple[int, bool]:
        return max(0, _count_lines(self.path) - 1), False

    def chunks(self, start: int, chunk_rows: int) -> Iterator[RowBatch]:
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = (r for r in itertools.islice(csv.reader(f), 1, None) if r)
            for _ in itertools.islice(rows, start):
                pass
            row = start
            while batch := list(itertools.islice(rows, chunk_rows)):
                yield self._batch(row, batch)
                row += len(batch)

    def _batch(self, start: int, rows: list[list[str]]) -> RowBatch:
        width = len(self.header)
        bad = {
            i: f"has {len(r)} fields, the header has {width}"
            for i, r in enumerate(rows)
            if len(r) != width
        }
        if bad:
            rows = [r if i not in bad else [""] * width for i, r in enumerate(rows)]
        cells = np.array(rows, dtype=object).reshape(len(rows), width)
        columns = {name: cells[:, k] for k, name in enumerate(self.header)}
        return RowBatch(start, len(rows), columns, bad)


class ParquetReader:
    """A Parquet file, read a row group at a time (pyarrow: ``pip install inferd[jobs]``)."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                f"{path}: reading Parquet needs pyarrow: pip install 'inferd[jobs]'"
            ) from None
        self.path = path
        # pre_buffer would read every requested row group into memory up front: the whole file.
        self._file = pq.ParquetFile(path, pre_buffer=False)

    def total_rows(self) -> tuple[int, bool]:
        return int(self._file.metadata.num_rows), True

    def chunks(self, start: int, chunk_rows: int) -> Iterator[RowBatch]:
        import pyarrow as pa

        group, skip = self._locate(start)
        groups = range(group, self._file.metadata.num_row_groups)
        if not groups:
            return
        pending: list[Any] = []
        have, row = 0, start
        for batch in self._batches(groups, chunk_rows):
            pending.append(batch)
            have += batch.num_rows
            while have - skip >= chunk_rows:
                table = pa.Table.from_batches(pending).slice(skip)
                yield _arrow_batch(row, table.slice(0, chunk_rows))
                rest = table.slice(chunk_rows)
                pending, have, skip, row = rest.to_batches(), rest.num_rows, 0, row + chunk_rows
        if have - skip > 0:
            yield _arrow_batch(row, pa.Table.from_batches(pending).slice(skip))

    def _batches(self, groups: range, chunk_rows: int) -> Iterator[Any]:
        """Record batches, one row group at a time (memory: one row group, not the file)."""
        for group in groups:
            yield from self._file.iter_batches(batch_size=chunk_rows, row_groups=[group])

    def _locate(self, start: int) -> tuple[int, int]:
        """The row group that holds row ``start``, and ``start``'s offset in it."""
        metadata = self._file.metadata
        first = 0
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if start < first + rows:
                return group, start - first
            first += rows
        return metadata.num_row_groups, 0


def _arrow_batch(start: int, table: Any) -> RowBatch:
    columns = {name: arrow_column(table.column(name)) for name in table.column_names}
    return RowBatch(start, table.num_rows, columns)


def arrow_column(column: Any) -> np.ndarray:
    """A pyarrow column as numpy: 1-D numbers, 2-D for lists of one length, else objects."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if array.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return np.asarray(array.to_numpy(zero_copy_only=False))
    if array.null_count == 0 and (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind)):
        dense = _dense_list(array)
        if dense is not None:
            return dense
    return object_column(array.to_pylist())


def _dense_list(array: Any) -> np.ndarray | None:
    """A list column whose rows all hold the same number of numbers, as a 2-D array."""
    import pyarrow as pa

    values = array.flatten()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        return None
    if values.null_count or not len(array):
        return None
    width = len(values) // len(array)
    if pa.types.is_list(array.type):
        offsets = np.asarray(array.offsets)
        if not np.all(np.diff(offsets) == width):
            return None
    flat = np.asarray(values.to_numpy(zero_copy_only=False))
    return flat.reshape(len(array), width)
