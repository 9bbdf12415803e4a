"""The commit log's logic: records, torn lines, resume points, and refusing another job's log."""

from __future__ import annotations

import pytest

from inferd.errors import ConfigError
from inferd.jobs.manifest import (
    BatchSize,
    Chunk,
    JobIdentity,
    Manifest,
    Record,
    check_same_job,
    decode,
    encode,
    part_stem,
)

IDENTITY = JobIdentity.of({"model": "mlp", "input": "/data/in.parquet", "input size": 100})


def log(*records: Record) -> str:
    return "".join(encode(r) for r in (IDENTITY, *records))


def test_records_survive_a_round_trip() -> None:
    for record in (IDENTITY, BatchSize(512, 1234.5), Chunk(0, 256, failed=3, seconds=0.25)):
        assert decode(encode(record), "m") == record


def test_parse_rebuilds_the_state() -> None:
    text = log(BatchSize(64), Chunk(0, 100), Chunk(100, 200, failed=2))
    manifest, whole = Manifest.parse(text, "m")
    assert manifest.identity == IDENTITY
    assert manifest.batch_size == BatchSize(64)
    assert [c.start for c in manifest.chunks] == [0, 100]
    assert (manifest.committed_rows, manifest.failed_rows, manifest.resume_row()) == (200, 2, 200)
    assert whole == len(text.encode())


def test_a_torn_last_line_is_left_out() -> None:
    whole = log(BatchSize(64), Chunk(0, 100))
    torn = whole + encode(Chunk(100, 200))[:-7]  # killed in the middle of the append
    manifest, size = Manifest.parse(torn, "m")
    assert manifest.resume_row() == 100
    assert size == len(whole.encode())


def test_a_bad_whole_line_is_corruption_named_by_line() -> None:
    text = log(Chunk(0, 100)) + "{not json}\n" + encode(Chunk(100, 200))
    with pytest.raises(ConfigError, match=r"m line 3: not a manifest record"):
        Manifest.parse(text, "m")


def test_the_first_line_must_name_the_job() -> None:
    with pytest.raises(ConfigError, match="identity first"):
        Manifest.parse(encode(Chunk(0, 10)), "m")


def test_resume_row_is_the_end_of_the_prefix_from_row_zero() -> None:
    manifest = Manifest(IDENTITY)
    assert manifest.resume_row() == 0
    manifest.apply(Chunk(100, 200))
    assert manifest.resume_row() == 0  # row 0..100 is missing
    manifest.apply(Chunk(0, 100))
    assert manifest.resume_row() == 200
    assert manifest.complete(200) and not manifest.complete(300)
    assert manifest.is_committed(100) and not manifest.is_committed(200)


def test_a_chunk_is_committed_once() -> None:
    manifest = Manifest(IDENTITY)
    manifest.apply(Chunk(0, 100))
    with pytest.raises(ConfigError, match="not new"):
        manifest.apply(Chunk(0, 100))


def test_the_batch_size_does_not_change_once_chosen() -> None:
    manifest = Manifest(IDENTITY)
    manifest.apply(BatchSize(64, 10.0))
    manifest.apply(BatchSize(64, 11.0))  # the same size, recorded again: harmless
    with pytest.raises(ConfigError, match="batch size changed"):
        manifest.apply(BatchSize(128))


def test_another_job_is_refused_saying_what_differs() -> None:
    other = JobIdentity.of({"model": "mlp", "input": "/data/in.parquet", "input size": 200})
    check_same_job(IDENTITY, JobIdentity.of(dict(IDENTITY.fields)), "out.inferd-job")
    with pytest.raises(ConfigError) as error:
        check_same_job(IDENTITY, other, "out.inferd-job")
    assert "input size: 100 vs 200" in error.value.message
    assert "--restart" in error.value.message


def test_part_names_sort_in_input_order() -> None:
    names = [part_stem(a, b) for a, b in ((0, 8192), (8192, 16384), (90000, 100000))]
    assert names == sorted(names)
