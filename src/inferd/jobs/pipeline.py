"""The chunk loop of a batch job: read, compute, commit, in input order, a few chunks in flight.

Reading (and turning rows into tensors) runs on a thread of its own, so the event loop keeps
the replicas fed while the next chunk is parsed; committing runs on another. (One thread each,
not a pool: every thread that allocates big arrays gets a malloc arena of its own, and the
memory those arenas keep adds up.) Chunks are committed in input order, so
the committed rows are always a prefix of the input. A first SIGINT or SIGTERM stops reading
and lets the chunks in flight finish and commit; a second one discards them.

A chunk the model rejects is split in two, aligned to the batch size, until the rows at fault
stand alone: they are recorded with their error, the others are computed as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np

from inferd.datatypes import to_numpy_dtype
from inferd.errors import InferdError, Overloaded, PayloadTooLarge
from inferd.jobs.columns import ColumnMapping, to_tensors
from inferd.jobs.journal import Journal, write_atomic
from inferd.jobs.manifest import Chunk, part_stem
from inferd.jobs.progress import ProgressMeter
from inferd.jobs.readers import RowBatch
from inferd.jobs.runner import ROW_ERRORS, TRANSIENT_ERRORS, Runner, Tensors
from inferd.jobs.writers import OutputTable, RowError, Writer, write_errors

logger = logging.getLogger("inferd.batch")

ERRORS_SUFFIX: Final = ".errors.jsonl"
RETRIES: Final = 5


@dataclass(slots=True)
class Prepared:
    """A chunk read and turned into the model's inputs."""

    start: int
    rows: int
    ids: np.ndarray
    tensors: Tensors
    bad: dict[int, str]


@dataclass(slots=True)
class Computed:
    """A chunk's outputs (successful rows) and its failed rows, ready to commit."""

    start: int
    rows: int
    table: OutputTable
    errors: list[RowError]
    seconds: float


def prepare(batch: RowBatch, mapping: ColumnMapping, runner: Runner) -> Prepared:
    """The chunk's tensors, its ids and the rows that failed before computing.

    A failed row stays in the tensors, blanked (zeros; empty bytes), so that every other row
    keeps its place in its batch.
    """
    tensors, bad = to_tensors(mapping, batch)
    rejected = {i: why for i, why in runner.reject(tensors).items() if i not in bad}
    if rejected:
        bad = dict(sorted({**bad, **rejected}.items()))
        rows = np.fromiter(rejected, dtype=np.int64)
        for tensor in tensors.values():
            tensor[rows] = b"" if tensor.dtype.kind == "O" else 0
    if mapping.id_column is not None and mapping.id_column in batch.columns:
        ids = batch.columns[mapping.id_column]
    else:
        ids = np.arange(batch.start, batch.start + batch.rows, dtype=np.int64)
    return Prepared(batch.start, batch.rows, ids, tensors, bad)


class StopSignal:
    """SIGINT/SIGTERM: the first stops the job after its chunks in flight, a second at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.soft = asyncio.Event()
        self.hard = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.receive, signum)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def receive(self, signum: int) -> None:
        """Called from the event loop for each signal."""
        if self.soft.is_set():
            self.hard.set()
            logger.warning("%s again: discarding the chunks in flight", _name(signum))
            return
        self.signum = signum
        self.soft.set()
        logger.warning("%s: finishing the chunks in flight (again to discard them)", _name(signum))


def _name(signum: int) -> str:
    return signal.Signals(signum).name


class Pipeline:
    """Runs the chunks of one job through a runner into its journal."""

    def __init__(  # noqa: PLR0913 - the job's parts, each needed
        self,
        runner: Runner,
        journal: Journal,
        writer: Writer,
        mapping: ColumnMapping,
        batch_size: int,
        meter: ProgressMeter,
        stop: StopSignal,
        max_in_flight: int,
    ) -> None:
        self._runner = runner
        self._journal = journal
        self._writer = writer
        self._mapping = mapping
        self._batch_size = batch_size
        self._meter = meter
        self._stop = stop
        self._max_in_flight = max_in_flight
        self.max_rows_per_s: float | None = None
        self.compute_s = 0.0
        self.run_rows = 0
        self._submitted = 0
        self._paced_since = 0.0
        self._first = True
        self._reading = ThreadPoolExecutor(1, thread_name_prefix="inferd-batch-read")
        self._committing = ThreadPoolExecutor(1, thread_name_prefix="inferd-batch-commit")

    async def run(self, chunks: Iterator[RowBatch]) -> bool:
        """Compute and commit every chunk; True if the input was read to its end."""
        prepared = (prepare(batch, self._mapping, self._runner) for batch in chunks)
        in_flight: deque[asyncio.Task[Computed]] = deque()
        hard: asyncio.Future[object] = asyncio.ensure_future(self._stop.hard.wait())
        started = self._paced_since = time.monotonic()
        exhausted = False
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.soft.is_set():  # a signal during the batch-size search counts
                chunk = await loop.run_in_executor(self._reading, next, prepared, None)
                if chunk is None:
                    exhausted = True
                    break
                if self._journal.manifest.is_committed(chunk.start):
                    continue
                if not await self._pace(chunk.rows):
                    break
                in_flight.append(asyncio.ensure_future(self._compute(chunk)))
                while len(in_flight) >= self._max_in_flight:
                    await self._commit_next(in_flight, hard)
            while in_flight:
                await self._commit_next(in_flight, hard)
        except _Discarded:
            exhausted = False
        finally:
            self.compute_s = time.monotonic() - started
            hard.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await loop.run_in_executor(self._reading, prepared.close)
            self._reading.shutdown(wait=False)
            self._committing.shutdown(wait=False)
        return exhausted

    async def _pace(self, rows: int) -> bool:
        """Wait for ``--max-rows-per-s``; False if a stop came first."""
        if self.max_rows_per_s is not None:
            due = self._paced_since + self._submitted / self.max_rows_per_s
            wait = due - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.soft.wait(), wait)
        self._submitted += rows
        return not self._stop.soft.is_set()

    async def _commit_next(
        self, in_flight: deque[asyncio.Task[Computed]], hard: asyncio.Future[object]
    ) -> None:
        oldest = in_flight[0]
        waiting: set[asyncio.Future[object]] = {oldest, hard}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not oldest.done():
            raise _Discarded
        in_flight.popleft()
        computed = oldest.result()
        self._check_first(computed)
        await asyncio.get_running_loop().run_in_executor(self._committing, self._commit, computed)
        self._meter.add(computed.rows)
        self.run_rows += computed.rows

    def _check_first(self, computed: Computed) -> None:
        """Stop at once if every row of the first chunk failed: the job itself is wrong."""
        if self._first and computed.rows and not computed.table.rows:
            first = computed.errors[0]
            raise InferdError(
                f"every row of the first chunk failed, so nothing was written; "
                f"row {first.row}: {first.error}"
            )
        self._first = False

    def _commit(self, computed: Computed) -> None:
        stem = part_stem(computed.start, computed.start + computed.rows)
        table, writer = computed.table, self._writer
        write_atomic(self._journal.part(stem, writer.suffix), lambda f: writer.write_part(f, table))
        if computed.errors:
            name = self._mapping.id_name
            path = self._journal.part(stem, ERRORS_SUFFIX)
            write_atomic(path, lambda f: write_errors(f, computed.errors, name))
        end = computed.start + computed.rows
        self._journal.record(Chunk(computed.start, end, len(computed.errors), computed.seconds))

    # --- computing one chunk ------------------------------------------------------------

    async def _compute(self, chunk: Prepared) -> Computed:
        started = time.monotonic()
        segments: list[tuple[int, Tensors]] = []
        failed = dict(chunk.bad)
        await self._isolate(chunk.tensors, 0, chunk.rows, segments, failed)
        table = self._table(chunk, segments, failed)
        ids = chunk.ids.tolist()
        errors = [RowError(chunk.start + i, ids[i], msg) for i, msg in sorted(failed.items())]
        return Computed(chunk.start, chunk.rows, table, errors, time.monotonic() - started)

    async def _isolate(
        self,
        tensors: Tensors,
        lo: int,
        hi: int,
        segments: list[tuple[int, Tensors]],
        failed: dict[int, str],
    ) -> None:
        """Compute rows ``[lo, hi)``; on a row error, split until the bad rows stand alone."""
        part = tensors if (lo, hi) == (0, _rows(tensors)) else _slice(tensors, lo, hi)
        try:
            segments.append((lo, await self._infer(part)))
            return
        except PayloadTooLarge:
            raise
        except ROW_ERRORS as e:
            if hi - lo == 1:
                failed.setdefault(lo, e.message)
                return
        mid = _split_point(lo, hi, self._batch_size)
        await self._isolate(tensors, lo, mid, segments, failed)
        await self._isolate(tensors, mid, hi, segments, failed)

    async def _infer(self, tensors: Tensors) -> Tensors:
        """One call to the runner, retried with backoff while the machinery is unavailable."""
        for attempt in range(RETRIES):
            try:
                return await self._runner.infer(tensors, self._batch_size)
            except TRANSIENT_ERRORS as e:
                if attempt == RETRIES - 1 or self._stop.hard.is_set():
                    raise
                delay = e.retry_after if isinstance(e, Overloaded) else 2.0**attempt
                logger.warning("%s; trying again in %.0f s", e.message, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _table(
        self, chunk: Prepared, segments: list[tuple[int, Tensors]], failed: dict[int, str]
    ) -> OutputTable:
        segments.sort(key=lambda s: s[0])
        outputs = _join([s[1] for s in segments]) if segments else self._no_outputs()
        if not failed:
            return OutputTable(self._mapping.id_name, chunk.ids, outputs)
        computed = np.concatenate(
            [np.arange(lo, lo + _rows(out)) for lo, out in segments] or [np.empty(0, np.int64)]
        )
        keep = ~np.isin(computed, np.fromiter(failed, dtype=np.int64))
        kept = {k: v[keep] for k, v in outputs.items()}
        return OutputTable(self._mapping.id_name, chunk.ids[computed[keep]], kept)

    def _no_outputs(self) -> Tensors:
        """Empty outputs of the right columns, for a chunk whose every row failed."""
        return {
            s.name: np.zeros((0, *(max(d, 1) for d in s.shape[1:])), to_numpy_dtype(s.datatype))
            for s in self._runner.outputs
        }


class _Discarded(Exception):
    """A second signal: the chunks in flight are dropped."""


def _rows(tensors: Tensors) -> int:
    return len(next(iter(tensors.values())))


def _slice(tensors: Tensors, lo: int, hi: int) -> Tensors:
    return {k: v[lo:hi] for k, v in tensors.items()}


def _join(parts: list[Tensors]) -> Tensors:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split_point(lo: int, hi: int, batch_size: int) -> int:
    """Halfway, on a batch boundary where there is one, so whole batches stay whole."""
    half = (hi - lo) // 2
    aligned = (half // batch_size) * batch_size
    return lo + (aligned or half)
