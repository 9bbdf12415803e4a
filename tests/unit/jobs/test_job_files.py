"""Reading inputs in chunks from any row, writing parts, merging them, the work folder."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferd.errors import ConfigError
from inferd.jobs.formats import errors_path, format_of
from inferd.jobs.journal import MANIFEST_FILE, Journal, work_folder, write_atomic
from inferd.jobs.manifest import BatchSize, Chunk, JobIdentity
from inferd.jobs.readers import open_reader
from inferd.jobs.writers import OutputTable, writer_for

ROWS = 10


def write_inputs(folder: Path) -> dict[str, Path]:
    x = np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3)
    parquet = folder / "in.parquet"
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3)
    pq.write_table(pa.table({"id": np.arange(ROWS), "input": column}), parquet, row_group_size=4)
    jsonl = folder / "in.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps({"id": i, "input": x[i].tolist()}) + b"\n\n"
                               for i in range(ROWS)))  # fmt: skip
    with (folder / "in.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "a", "b", "c"])
        writer.writerows([[i, *x[i].tolist()] for i in range(ROWS)])
    return {"parquet": parquet, "jsonl": jsonl, "csv": folder / "in.csv"}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_chunks_start_at_any_row_and_hold_chunk_rows(tmp_path: Path, fmt: str) -> None:
    path = write_inputs(tmp_path)[fmt]
    reader = open_reader(path, fmt)
    total, exact = reader.total_rows()
    assert exact == (fmt == "parquet") and (total == ROWS or not exact)
    chunks = list(reader.chunks(3, 3))
    assert [(c.start, c.rows) for c in chunks] == [(3, 3), (6, 3), (9, 1)]
    ids = np.concatenate([np.asarray(c.columns["id"], dtype=np.int64) for c in chunks])
    assert ids.tolist() == list(range(3, ROWS))


def test_a_line_that_is_not_json_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1}\n{"id": \n[1]\n')
    (chunk,) = open_reader(path, "jsonl").chunks(0, 10)
    assert chunk.rows == 3 and sorted(chunk.bad) == [1, 2]
    assert chunk.bad[2] == "not a JSON object"


def test_formats_come_from_the_suffix_or_the_flag(tmp_path: Path) -> None:
    assert format_of(Path("x.PARQUET"), None, "--input-format") == "parquet"
    assert format_of(Path("x.data"), "csv", "--input-format") == "csv"
    with pytest.raises(ConfigError, match="--output-format"):
        format_of(Path("x.data"), None, "--output-format")
    assert errors_path(Path("out/scores.parquet")) == Path("out/scores.errors.jsonl")


def table(start: int, rows: int) -> OutputTable:
    ids = np.arange(start, start + rows)
    out = np.arange(start * 2, (start + rows) * 2, dtype=np.float32).reshape(rows, 2) / 4
    return OutputTable("id", ids, {"output": out, "label": ids % 3})


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_parts_merge_into_one_file_in_order(tmp_path: Path, fmt: str) -> None:
    writer = writer_for(fmt, "id", ("output", "label"))
    parts = []
    for i, (start, rows) in enumerate([(0, 3), (3, 0), (3, 4)]):
        part = tmp_path / f"part{i}{writer.suffix}"
        write_atomic(part, functools.partial(writer.write_part, table=table(start, rows)))
        parts.append(part)
    merged = tmp_path / f"out{writer.suffix}"
    write_atomic(merged, lambda f: writer.merge(parts, f))
    if fmt == "parquet":
        read = pq.read_table(merged)
        assert read.column("id").to_pylist() == list(range(7))
        assert read.column("output").to_pylist()[1] == [0.5, 0.75]
    elif fmt == "jsonl":
        lines = [orjson.loads(line) for line in merged.read_bytes().splitlines()]
        assert [r["id"] for r in lines] == list(range(7))
        assert lines[1] == {"id": 1, "output": [0.5, 0.75], "label": 1}
    else:
        with merged.open(newline="") as f:
            lines = list(csv.reader(f))
        assert lines[0] == ["id", "output_0", "output_1", "label"]
        assert lines[2] == ["1", "0.5", "0.75", "1"] and len(lines) == 8


IDENTITY = JobIdentity.of({"input": "in.parquet", "input size": 1})


def test_a_journal_resumes_its_own_job_and_refuses_another(tmp_path: Path) -> None:
    folder = work_folder(tmp_path / "out.parquet")
    assert folder.name == "out.parquet.inferd-job"
    journal = Journal.open(folder, IDENTITY)
    journal.record(BatchSize(64))
    journal.record(Chunk(0, 100))
    journal.close()
    with (folder / MANIFEST_FILE).open("ab") as f:
        f.write(b'{"kind":"chunk","start":100,"st')  # a kill in the middle of an append
    journal = Journal.open(folder, IDENTITY)
    assert journal.manifest.resume_row() == 100 and journal.manifest.batch_size == BatchSize(64)
    journal.record(Chunk(100, 200))
    journal.close()
    journal = Journal.open(folder, IDENTITY)
    assert journal.manifest.resume_row() == 200
    journal.close()
    other = JobIdentity.of({"input": "in.parquet", "input size": 2})
    with pytest.raises(ConfigError, match="input size: 1 vs 2"):
        Journal.open(folder, other)
    fresh = Journal.open(folder, other, restart=True)
    assert fresh.manifest.resume_row() == 0
    fresh.remove()
    assert not folder.exists()


def test_one_job_at_a_time_in_a_folder(tmp_path: Path) -> None:
    first = Journal.open(tmp_path / "job", IDENTITY)
    try:
        with pytest.raises(ConfigError, match="another inferd batch is running"):
            Journal.open(tmp_path / "job", IDENTITY)
    finally:
        first.close()


def test_an_interrupted_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"

    def fail(f: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert os.listdir(tmp_path) == []
