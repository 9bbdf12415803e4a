"""The file formats a batch job reads and writes, told apart by suffix or by flag."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from inferd.errors import ConfigError

FORMATS: Final = ("jsonl", "csv", "parquet")
_SUFFIXES: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def format_of(path: Path, given: str | None, flag: str) -> str:
    """The format named by ``flag`` (``given``), else the one the file's suffix says."""
    if given is not None:
        if given not in FORMATS:
            raise ConfigError(f"{flag} {given}: expected one of {', '.join(FORMATS)}")
        return given
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        suffixes = ", ".join(sorted(_SUFFIXES))
        raise ConfigError(
            f"{path}: cannot tell the format from the suffix (known: {suffixes}); "
            f"name it with {flag} {{{','.join(FORMATS)}}}"
        )
    return found


def errors_path(output: Path) -> Path:
    """Where the failed rows of the job writing ``output`` go: ``OUTPUT-STEM.errors.jsonl``."""
    return output.with_name(f"{output.stem}.errors.jsonl")
