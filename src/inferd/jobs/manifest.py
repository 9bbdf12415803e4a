"""A batch job's commit log, as pure logic: what is done, and whether a log belongs to this job.

The manifest is an append-only file of JSON lines. Its first line names the job (its
identity: model, input file and options); the next lines are, in the order they happened, the
batch size the job chose and one line per committed chunk (its input row range and how many of
its rows succeeded and failed). A chunk's output part is written and made durable *before* its
line is appended, so a line names only parts that exist: a kill loses at most the chunks that
had no line yet. A kill during an append leaves a torn last line with no newline; it is ignored
(the chunk it named is computed again). I/O lives in ``journal.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from inferd.errors import ConfigError

FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What makes two runs the same job: named fields, compared as strings."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, fields: Mapping[str, object]) -> JobIdentity:
        """An identity from named values (order does not matter)."""
        return cls(tuple(sorted((k, str(v)) for k, v in fields.items())))

    def differences(self, other: JobIdentity) -> list[str]:
        """``key: this vs other`` for every field that differs (missing fields show as -)."""
        mine, theirs = dict(self.fields), dict(other.fields)
        keys = sorted(set(mine) | set(theirs))
        return [
            f"{k}: {mine.get(k, '-')} vs {theirs.get(k, '-')}"
            for k in keys
            if mine.get(k) != theirs.get(k)
        ]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One committed chunk: input rows ``[start, stop)``, of which ``failed`` failed."""

    start: int
    stop: int
    failed: int = 0
    seconds: float = 0.0
    """Compute time of the chunk, for the record."""

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class BatchSize:
    """The batch size the job computes every chunk at (chosen once, reused on resume)."""

    rows: int
    rows_per_s: float = 0.0
    """What the search measured at this size (0 when the size was given)."""


Record = JobIdentity | Chunk | BatchSize


def encode(record: Record) -> str:
    """One manifest line (with its newline)."""
    data: dict[str, Any]
    if isinstance(record, JobIdentity):
        data = {"kind": "job", "version": FORMAT_VERSION, "identity": dict(record.fields)}
    elif isinstance(record, BatchSize):
        data = {"kind": "batch_size", "rows": record.rows, "rows_per_s": record.rows_per_s}
    else:
        data = {
            "kind": "chunk",
            "start": record.start,
            "stop": record.stop,
            "failed": record.failed,
            "seconds": round(record.seconds, 6),
        }
    return json.dumps(data, separators=(",", ":")) + "\n"


def decode(line: str, where: str) -> Record:
    """A record from one manifest line; ``ConfigError`` naming ``where`` if it is not one."""
    try:
        data = json.loads(line)
        kind = data["kind"]
        if kind == "job":
            if data["version"] != FORMAT_VERSION:
                raise ConfigError(
                    f"{where}: manifest format {data['version']}, this inferd writes "
                    f"{FORMAT_VERSION}; finish the job with the inferd that started it"
                )
            return JobIdentity.of(data["identity"])
        if kind == "batch_size":
            return BatchSize(int(data["rows"]), float(data["rows_per_s"]))
        if kind == "chunk":
            return Chunk(int(data["start"]), int(data["stop"]), int(data["failed"]),
                         float(data["seconds"]))  # fmt: skip
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{where}: not a manifest record ({type(e).__name__}: {e})") from None
    raise ConfigError(f"{where}: unknown manifest record kind {kind!r}")


class Manifest:
    """The state a manifest describes: the job, its batch size and its committed chunks."""

    def __init__(self, identity: JobIdentity) -> None:
        self.identity = identity
        self.batch_size: BatchSize | None = None
        self._chunks: dict[int, Chunk] = {}

    @classmethod
    def parse(cls, text: str, where: str) -> tuple[Manifest, int]:
        """The manifest in ``text`` and how many of its bytes hold whole lines.

        A last line without its newline was torn by a kill during the append: it is left out
        (and the caller truncates it away before appending). A bad whole line is corruption.
        """
        complete = text.rfind("\n") + 1
        lines = text[:complete].splitlines()
        if not lines:
            raise ConfigError(f"{where}: empty manifest (the job had not started)")
        first = decode(lines[0], f"{where} line 1")
        if not isinstance(first, JobIdentity):
            raise ConfigError(f"{where} line 1: expected the job's identity first")
        manifest = cls(first)
        for number, line in enumerate(lines[1:], start=2):
            manifest.apply(decode(line, f"{where} line {number}"), f"{where} line {number}")
        return manifest, len(text[:complete].encode())

    def apply(self, record: Record, where: str = "manifest") -> None:
        """Add one record; ``ConfigError`` if it contradicts the ones before it."""
        if isinstance(record, JobIdentity):
            raise ConfigError(f"{where}: a second job identity")
        if isinstance(record, BatchSize):
            if self.batch_size is not None and self.batch_size.rows != record.rows:
                raise ConfigError(f"{where}: the batch size changed after it was chosen")
            self.batch_size = record
            return
        if record.start in self._chunks or record.stop <= record.start or record.start < 0:
            raise ConfigError(f"{where}: chunk [{record.start}, {record.stop}) is not new")
        self._chunks[record.start] = record

    def is_committed(self, start: int) -> bool:
        """Whether the chunk that starts at row ``start`` is committed."""
        return start in self._chunks

    @property
    def chunks(self) -> list[Chunk]:
        """Committed chunks in input order."""
        return [self._chunks[s] for s in sorted(self._chunks)]

    @property
    def committed_rows(self) -> int:
        return sum(c.rows for c in self._chunks.values())

    @property
    def failed_rows(self) -> int:
        return sum(c.failed for c in self._chunks.values())

    def resume_row(self) -> int:
        """The first row not covered by the committed chunks that start at row 0."""
        row = 0
        while row in self._chunks:
            row = self._chunks[row].stop
        return row

    def complete(self, total_rows: int) -> bool:
        """Whether the chunks cover rows ``[0, total_rows)`` end to end."""
        return self.resume_row() == total_rows


def check_same_job(found: JobIdentity, wanted: JobIdentity, folder: str) -> None:
    """``ConfigError`` saying how they differ if a resumed job is not the one asked for."""
    differences = found.differences(wanted)
    if differences:
        raise ConfigError(
            f"{folder} holds the progress of another job ({'; '.join(differences)}, "
            "the first value is the one it was started with); run the command that started "
            "it to resume it, or add --restart to discard its progress"
        )


def part_stem(chunk_start: int, chunk_stop: int) -> str:
    """The file name (without suffix) of a chunk's parts: sorts in input order."""
    return f"{chunk_start:012d}-{chunk_stop:012d}"


def chunk_ranges(start: int, total_rows: int | None, chunk_rows: int) -> Iterable[tuple[int, int]]:
    """``[start, stop)`` of every chunk from ``start`` (a chunk boundary) to the end."""
    row = start
    while total_rows is None or row < total_rows:
        stop = row + chunk_rows if total_rows is None else min(row + chunk_rows, total_rows)
        yield row, stop
        row = stop
