"""How big a job's chunks and batches are: chunk rows from the inputs' size, the batch size
measured on a sample of the input (``tuning.BatchSizeSearch`` drives the trials)."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final

import numpy as np

from inferd.clock import MonotonicClock
from inferd.config import TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import ConfigError
from inferd.jobs.columns import ColumnMapping
from inferd.jobs.options import JobOptions
from inferd.jobs.pipeline import prepare
from inferd.jobs.readers import Reader
from inferd.jobs.runner import Runner, Tensors
from inferd.jobs.tuning import BatchSizeSearch, SearchConfig, nearest, powers_of_two

logger = logging.getLogger("inferd.batch")

MAX_CHUNK_ROWS: Final = 8192
CHUNK_BYTES: Final = 32 << 20
MIN_BATCH: Final = 8
TRIAL_S: Final = 0.5
LLM_BATCHES_PER_CHUNK: Final = 4


def row_bytes(inputs: tuple[TensorSpec, ...]) -> int:
    """Bytes of one row of inputs (a variable dimension counts 1, a BYTES element 64)."""
    size = 0
    for spec in inputs:
        item = 64 if spec.datatype == "BYTES" else to_numpy_dtype(spec.datatype).itemsize
        size += item * math.prod(max(d, 1) for d in spec.shape[1:])
    return max(size, 1)


def chunk_rows_for(options: JobOptions, runner: Runner) -> int:
    """Rows per chunk: given, or a power of two of about ``CHUNK_BYTES`` of inputs."""
    if options.chunk_rows:
        return options.chunk_rows
    size = options.batch_size or runner.fixed_batch_size
    if runner.fixed_batch_size:
        return LLM_BATCHES_PER_CHUNK * (size or 1)
    rows = MAX_CHUNK_ROWS
    while rows > 64 and rows * row_bytes(runner.inputs) > CHUNK_BYTES:
        rows //= 2
    return max(size, rows - rows % size) if size else rows


def search_config(runner: Runner, chunk_rows: int) -> SearchConfig:
    """Powers of two that divide the chunk, from the model's configured batch size.

    At most half a chunk: a chunk of two batches or more keeps the replicas fed while the
    job waits for a chunk's last batch, and a smaller largest size keeps the search short.
    """
    by_bytes = runner.max_batch_bytes // row_bytes(runner.inputs)
    high = max(MIN_BATCH, min(chunk_rows // 2, by_bytes))
    candidates = powers_of_two(MIN_BATCH, high, divides=chunk_rows) or (chunk_rows,)
    start = nearest(candidates, runner.preferred_batch_size)
    return SearchConfig(
        candidates, start, trial_s=TRIAL_S, min_batches=1, max_trial_rows=2 * chunk_rows
    )


async def first_chunk_sample(
    reader: Reader, mapping: ColumnMapping, runner: Runner, chunk_rows: int
) -> Tensors:
    """The good rows of the input's first chunk: what the batch-size search computes."""
    first = await asyncio.to_thread(lambda: next(iter(reader.chunks(0, chunk_rows))))
    chunk = prepare(first, mapping, runner)
    keep = np.setdiff1d(np.arange(chunk.rows), np.fromiter(chunk.bad, dtype=np.int64))
    if not len(keep):
        raise ConfigError(f"every row of the input's first chunk fails: {chunk.bad[0]}")
    return {k: v[keep] for k, v in chunk.tensors.items()}


async def measure(runner: Runner, sample: Tensors, config: SearchConfig) -> BatchSizeSearch:
    """Run the search's trials on ``sample`` (tiled as needed); its results are discarded."""
    search = BatchSizeSearch(config, MonotonicClock())
    rows = len(next(iter(sample.values())))
    while (trial := search.next_trial()) is not None:
        index = np.arange(trial.rows) % rows
        tensors = {k: v[index] for k, v in sample.items()}
        search.begin()
        await runner.infer(tensors, trial.size)
        search.finish(trial)
    logger.info("batch size %d; rows/s measured: %s", search.best,
                ", ".join(f"{s}: {r:,.0f}" for s, r in sorted(search.rates.items())))  # fmt: skip
    return search
