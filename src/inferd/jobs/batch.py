"""``inferd batch``: a model over a file of rows, resumable, in input order, exactly once.

The job: open the input, load the model (or connect to ``--url``), map columns to inputs,
choose the batch size (measured on a sample of the input, then recorded in the manifest so that
a resumed job computes every row exactly as an uninterrupted one would), run the chunk pipeline
into the work folder, and when every chunk is committed merge the parts into the output and
delete the work folder. Interrupted, it says how to resume; run again, it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Final

from inferd.clock import MonotonicClock
from inferd.config import ModelConfig, load_server_config, usable_cpus
from inferd.errors import ConfigError, InferdError
from inferd.jobs.columns import ColumnMapping, resolve
from inferd.jobs.formats import errors_path
from inferd.jobs.journal import Journal, work_folder, write_atomic
from inferd.jobs.manifest import BatchSize, JobIdentity, part_stem
from inferd.jobs.options import JobOptions
from inferd.jobs.pipeline import ERRORS_SUFFIX, Pipeline, StopSignal
from inferd.jobs.progress import ProgressMeter, Report, estimate_lines, report_lines
from inferd.jobs.readers import Reader, RowBatch, open_reader
from inferd.jobs.runner import ROW_ERRORS, Runner
from inferd.jobs.sizing import (
    MAX_CHUNK_ROWS,
    TRIAL_S,
    chunk_rows_for,
    first_chunk_sample,
    measure,
    search_config,
)
from inferd.jobs.tuning import SearchConfig
from inferd.jobs.writers import Writer, concatenate, require_pyarrow, writer_for

logger = logging.getLogger("inferd.batch")

HEAD_ROWS: Final = 256
PROGRESS_TTY_S: Final = 0.5
PROGRESS_LOG_S: Final = 10.0


def run_job(options: JobOptions) -> int:
    """Run (or resume, or estimate) the job; the process exit status."""
    return asyncio.run(_main(options))


async def _main(options: JobOptions) -> int:
    started = time.monotonic()
    require_pyarrow(options.formats[1], options.output)
    reader = open_reader(options.input, options.formats[0])
    head = await asyncio.to_thread(_head, reader, options.input)
    counting = asyncio.ensure_future(asyncio.to_thread(reader.total_rows))
    runner = await _start_runner(options, head)
    try:
        mapping = resolve(runner.inputs, head.columns, dict(options.inputs), options.id_column)
        logger.info("model %r: %s", runner.name, mapping.describe())
        chunk_rows = chunk_rows_for(options, runner)
        total = await counting
        if options.estimate:
            return await _estimate(options, runner, reader, mapping, chunk_rows, total, started)
        identity = _identity(options, runner, mapping, chunk_rows)
        journal = Journal.open(work_folder(options.output), identity, options.restart)
        try:
            return await _run(options, runner, reader, journal, (mapping, chunk_rows), total,
                              started)  # fmt: skip
        finally:
            journal.close()
    finally:
        counting.cancel()
        await runner.close()


def _head(reader: Reader, path: Path) -> RowBatch:
    head = next(iter(reader.chunks(0, HEAD_ROWS)), None)
    if head is None:
        raise ConfigError(f"{path}: no rows")
    return head


async def _start_runner(options: JobOptions, head: RowBatch) -> Runner:
    if options.url is not None:
        from inferd.jobs.remote import RemoteRunner

        return await RemoteRunner.connect(options.url, options.model)
    config = _model_config(options)
    if config.backend == "llm":
        from inferd.jobs.llm import LLMRunner

        columns = head.columns
        chat = "messages" in dict(options.inputs) or (
            "messages" in columns and "prompt" not in columns
        )
        return await LLMRunner.start(config, options.sampling_params(), chat)
    from inferd.jobs.local import LocalRunner, free_memory, job_replicas

    replicas = options.replicas or job_replicas(config, usable_cpus(), free_memory())
    chunk = options.chunk_rows or max(MAX_CHUNK_ROWS, options.batch_size or 0)
    queue_rows = _max_in_flight(replicas) * chunk
    return await LocalRunner.start(config, replicas, queue_rows)


def _model_config(options: JobOptions) -> ModelConfig:
    """The one model MODEL names (``--model`` picks one from a repository)."""
    from inferd.repository import discover

    entries = discover([Path(options.model)])
    names = [e.name for e in entries]
    if options.model_name is not None:
        entries = [e for e in entries if e.name == options.model_name]
        if not entries:
            raise ConfigError(f"--model {options.model_name}: not in {options.model}; "
                              f"models there: {', '.join(names)}")  # fmt: skip
    if len(entries) > 1:
        raise ConfigError(f"{options.model} holds {len(entries)} models ({', '.join(names)}); "
                          "choose one with --model NAME")  # fmt: skip
    entry = entries[0]
    if entry.config is None:
        raise ConfigError(f"model {entry.name!r} cannot be loaded: {entry.error}")
    return entry.config


def _max_in_flight(replicas: int) -> int:
    """Chunks computing at once: enough that every replica always has a batch waiting."""
    return max(2, replicas + 1)


def _identity(
    options: JobOptions, runner: Runner, mapping: ColumnMapping, chunk_rows: int
) -> JobIdentity:
    """What a resumed run must share with the one that started the job."""
    stat = options.input.stat()
    return JobIdentity.of({
        "model": _model_identity(options, runner),
        "input": options.input.resolve(),
        "input size": stat.st_size,
        "input mtime": stat.st_mtime_ns,
        "formats": "/".join(options.formats),
        "columns": mapping.describe(),
        "id column": mapping.id_name,
        "chunk rows": chunk_rows,
        "batch size": options.batch_size or "chosen by measuring",
        "sampling": options.sampling_params() if runner.fixed_batch_size else "-",
    })  # fmt: skip


def _model_identity(options: JobOptions, runner: Runner) -> str:
    if options.url is not None:
        return f"{runner.name} at {options.url}"
    config = _model_config(options)
    files = [config.path / config.file] if config.file else sorted(config.path.iterdir())
    stats = [f.stat() for f in files if f.is_file()]
    size, mtime = sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    where = files[0] if config.file else config.path
    return f"{runner.name} ({where}, {size} bytes, mtime {mtime})"


# --- the batch size ------------------------------------------------------------------------


async def _batch_size(
    options: JobOptions,
    runner: Runner,
    reader: Reader,
    journal: Journal,
    mapping: ColumnMapping,
    chunk_rows: int,
) -> int:
    """The recorded size on resume; else the given one; else the fastest measured."""
    recorded = journal.manifest.batch_size
    if recorded is not None:
        return recorded.rows
    given = options.batch_size or runner.fixed_batch_size
    if given:
        journal.record(BatchSize(given))
        return given
    config = search_config(runner, chunk_rows)
    try:
        search = await measure(
            runner, await first_chunk_sample(reader, mapping, runner, chunk_rows), config
        )
    except ROW_ERRORS as e:
        logger.warning("cannot measure batch sizes (%s); using %d", e.message, config.start)
        journal.record(BatchSize(config.start))
        return config.start
    journal.record(BatchSize(search.best, search.rates.get(search.best, 0.0)))
    return search.best


# --- running -------------------------------------------------------------------------------


async def _run(
    options: JobOptions,
    runner: Runner,
    reader: Reader,
    journal: Journal,
    layout: tuple[ColumnMapping, int],
    total: tuple[int, bool],
    started: float,
) -> int:
    mapping, chunk_rows = layout
    manifest = journal.manifest
    stop = StopSignal()
    stop.install()
    try:
        batch_size = await _batch_size(options, runner, reader, journal, mapping, chunk_rows)
        outputs = tuple(s.name for s in runner.outputs)
        writer = writer_for(options.formats[1], mapping.id_name, outputs)
        meter = ProgressMeter(total[0], manifest.committed_rows, MonotonicClock())
        pipeline = Pipeline(runner, journal, writer, mapping, batch_size, meter, stop,
                            _max_in_flight(runner.replicas))  # fmt: skip
        pipeline.max_rows_per_s = options.max_rows_per_s
        show = asyncio.ensure_future(_show_progress(meter, options.progress))
        try:
            complete = await pipeline.run(reader.chunks(manifest.resume_row(), chunk_rows))
        finally:
            show.cancel()
            _end_progress(options.progress)
    except ConfigError:
        raise
    except InferdError as e:
        _say(f"inferd batch: {e.message}")
        _say(_resume_hint(manifest.committed_rows, total))
        return 1
    finally:
        stop.uninstall()
    if not complete:
        name = signal.Signals(stop.signum).name if stop.signum else "a signal"
        _say(f"inferd batch: stopped by {name}. {_resume_hint(manifest.committed_rows, total)}")
        return 128 + (stop.signum or 0)
    await asyncio.to_thread(_finish, journal, writer, options.output)
    report = _report(options, runner, journal, pipeline, batch_size, started)
    out = str(options.output)
    print("\n".join(report_lines(report, out, str(errors_path(options.output)))))
    return 0


def _resume_hint(committed: int, total: tuple[int, bool]) -> str:
    about = "" if total[1] else "about "
    return (
        f"{committed:,} of {about}{total[0]:,} rows are committed; run the same command again "
        "to resume where it stopped"
    )


def _finish(journal: Journal, writer: Writer, output: Path) -> None:
    """Merge the parts into the output and the errors file, then drop the work folder."""
    chunks = journal.manifest.chunks
    parts = [journal.part(part_stem(c.start, c.stop), writer.suffix) for c in chunks]
    write_atomic(output, lambda f: writer.merge(parts, f))
    failed = [journal.part(part_stem(c.start, c.stop), ERRORS_SUFFIX) for c in chunks if c.failed]
    errors = errors_path(output)
    if failed:
        write_atomic(errors, lambda f: concatenate(failed, f))
    else:
        with contextlib.suppress(FileNotFoundError):
            errors.unlink()  # a stale one from an earlier job writing this output
    journal.remove()


def _report(
    options: JobOptions,
    runner: Runner,
    journal: Journal,
    pipeline: Pipeline,
    batch_size: int,
    started: float,
) -> Report:
    price = _price(options)
    run_s = time.monotonic() - started
    return Report(
        rows=journal.manifest.committed_rows,
        failed=journal.manifest.failed_rows,
        run_rows=pipeline.run_rows,
        run_s=run_s,
        compute_s=pipeline.compute_s,
        batch_size=batch_size,
        replicas=runner.replicas,
        price_per_hour=price,
        cost=runner.cost(price, run_s),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _price(options: JobOptions) -> float:
    """``--price-per-hour``, else the model's ``price_per_hour``, else the server config's."""
    if options.price_per_hour is not None:
        return options.price_per_hour
    if options.url is None:
        model = _model_config(options).price_per_hour
        if model is not None:
            return model
    return load_server_config(options.server_config).price_per_hour


async def _estimate(
    options: JobOptions,
    runner: Runner,
    reader: Reader,
    mapping: ColumnMapping,
    chunk_rows: int,
    total: tuple[int, bool],
    started: float,
) -> int:
    """Measure on a sample of the input; print the expected time and cost of the whole job."""
    startup_s = time.monotonic() - started
    config = search_config(runner, chunk_rows)
    given = options.batch_size or runner.fixed_batch_size
    if given:
        config = SearchConfig((given,), given, trial_s=TRIAL_S, max_trial_rows=chunk_rows)
    search = await measure(
        runner, await first_chunk_sample(reader, mapping, runner, chunk_rows), config
    )
    rate = search.rates.get(search.best, 0.0)
    lines = [f"model        {runner.name}: {mapping.describe()}",
             f"batch size   {search.best}"]  # fmt: skip
    lines += estimate_lines(total[0], total[1], rate, startup_s, _price(options), runner.replicas)
    print("\n".join(lines))
    return 0


# --- progress ------------------------------------------------------------------------------


def _is_tty(progress: bool | None) -> bool:
    return progress if progress is not None else sys.stderr.isatty()


async def _show_progress(meter: ProgressMeter, progress: bool | None) -> None:
    live = _is_tty(progress)
    every = PROGRESS_TTY_S if live else PROGRESS_LOG_S
    while True:
        await asyncio.sleep(every)
        if live:
            sys.stderr.write("\r" + meter.line() + "\x1b[K")
            sys.stderr.flush()
        else:
            logger.info("%s", meter.line())


def _end_progress(progress: bool | None) -> None:
    if _is_tty(progress):
        sys.stderr.write("\n")
        sys.stderr.flush()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
