"""A batch job's work folder on disk: the manifest, the committed parts, durable writes.

Commit protocol, per chunk: write the part to a temporary name, fsync it, rename it to its
final name, fsync the folder; then append the chunk's manifest line and fsync the manifest.
Whatever a kill interrupts, the manifest names only complete parts. A part with no manifest
line (killed between the rename and the append) is simply written again on resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

from inferd.errors import ConfigError
from inferd.jobs.manifest import JobIdentity, Manifest, Record, check_same_job, encode

MANIFEST_FILE: Final = "manifest.jsonl"


def work_folder(output: Path) -> Path:
    """Where the job keeps its progress until the output is complete: ``OUTPUT.inferd-job``."""
    return output.with_name(output.name + ".inferd-job")


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that ``path`` holds either nothing or all of it, durably."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The manifest of one job, open for appending, and the folder of its parts."""

    def __init__(self, folder: Path, manifest: Manifest, file: BinaryIO) -> None:
        self.folder = folder
        self.manifest = manifest
        self._file = file

    @classmethod
    def open(cls, folder: Path, identity: JobIdentity, restart: bool = False) -> Journal:
        """Resume the job in ``folder``, or start it there; refuses another job's folder."""
        if restart and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_FILE
        file = path.open("a+b")
        try:
            _lock(file, folder)
            file.seek(0)
            text = file.read().decode("utf-8", errors="replace")
            if text.strip():
                manifest, whole = Manifest.parse(text, str(path))
                check_same_job(manifest.identity, identity, str(folder))
                file.truncate(whole)  # a line torn by a kill during its append
            else:
                file.truncate(0)
                manifest = Manifest(identity)
                journal = cls(folder, manifest, file)
                journal._append(identity)
                fsync_folder(folder)
                return journal
        except BaseException:
            file.close()
            raise
        return cls(folder, manifest, file)

    def record(self, record: Record) -> None:
        """Apply a record and append it durably (the commit point of a chunk)."""
        self.manifest.apply(record)
        self._append(record)

    def _append(self, record: Record) -> None:
        self._file.seek(0, os.SEEK_END)
        self._file.write(encode(record).encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def part(self, stem: str, suffix: str) -> Path:
        """The path of a part file."""
        return self.folder / f"{stem}{suffix}"

    def close(self) -> None:
        """Release the folder (its lock goes with the file)."""
        self._file.close()

    def remove(self) -> None:
        """Delete the folder, once the output it built is complete."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _lock(file: BinaryIO, folder: Path) -> None:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"{folder}: another inferd batch is running this job; wait for it or stop it"
        ) from None
