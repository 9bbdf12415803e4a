"""Running a job's model in this process's replicas: the server's ServedModel, batcher and pool.

The model is loaded exactly as ``inferd serve`` loads it (replica processes forked from the fork
server, each with its share of the cores), with three changes for a job: the batch size is the
job's (a policy whose size the job sets), the queue holds the job's chunks in flight, and a
chunk may take as long as it needs. A chunk is submitted whole; the batcher cuts it into
batches of exactly the batch size, and since a chunk is a multiple of it, no batch mixes rows
of two chunks: every row is computed in the same batch whichever run computes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from inferd.batching.policy import DispatchPolicy
from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError
from inferd.jobs.runner import CHUNK_TIMEOUT_S, Tensors
from inferd.metrics.registry import ServerMetrics
from inferd.replicas.process_replica import preload
from inferd.replicas.served_model import RequestOptions, ServedModel

_UNBOUNDED_BYTES = 1 << 40  # the job bounds memory by its chunks in flight, not bytes
_RUNTIME_BYTES = 512 << 20  # a replica process's own interpreter and libraries (torch: ~300 MB)


class RowsPolicy:
    """Dispatch at once, exactly ``rows`` rows per batch (the job sets ``rows``)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def max_rows(self) -> int:
        return self.rows

    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> float:
        return 0.0

    def take_rows(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> int:
        return self.rows

    def on_arrival(self, now: float, rows: int) -> None:
        """Nothing to learn: the job chooses the size."""

    def on_batch_done(self, rows: int, compute_s: float) -> None:
        """Nothing to learn: the job chooses the size."""

    def on_request_done(self, total_s: float) -> None:
        """Nothing to learn: the job chooses the size."""


class _JobModel(ServedModel):
    """A ServedModel whose batches follow the job's ``RowsPolicy``."""

    def __init__(self, config: ModelConfig, metrics: ServerMetrics, policy: RowsPolicy) -> None:
        price = config.price_per_hour or 0.0
        super().__init__(config.name, config, metrics.model(config.name, price_per_hour=price))
        self.job_policy = policy

    def _policy(self) -> DispatchPolicy:
        return self.job_policy


def job_replicas(config: ModelConfig, cpus: int, free_bytes: int) -> int:
    """Replicas for a job: as configured, else one single-threaded replica per core.

    Measured on the demo MLP on 2 cores: two single-threaded replicas compute 18% to 37% more
    rows per second than one replica with both cores (docs/batch.md). The job's own work
    (reading, sending, writing) then takes a core from one replica for a moment, instead of
    stalling every thread of a single replica at its next synchronisation point. Each copy of
    the model costs memory: no more replicas than half the free memory holds, at the model's
    size plus a runtime allowance each.
    """
    if config.instances > 1 or config.threads or config.autoscaling is not None:
        return config.instances
    path = config.path / config.file if config.file else config.path
    model_bytes = _size(path) + _RUNTIME_BYTES
    return max(1, min(cpus, free_bytes // 2 // model_bytes))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def free_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; else the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def job_config(config: ModelConfig, replicas: int | None, queue_rows: int) -> ModelConfig:
    """The model's config as a job runs it: fixed replicas, room for the chunks in flight."""
    batching = dataclasses.replace(
        config.batching,
        max_queue_rows=max(queue_rows, config.batching.max_queue_rows),
        max_queue_bytes=_UNBOUNDED_BYTES,
        max_batch_bytes=_UNBOUNDED_BYTES,
        timeout_ms=CHUNK_TIMEOUT_S * 1e3,
        slo_p99_ms=0.0,
        priority_levels=1,
        default_priority=1,
    )
    instances = replicas or config.instances
    return dataclasses.replace(config, instances=instances, autoscaling=None, batching=batching)


class LocalRunner:
    """The model in replica processes of this process."""

    def __init__(self, model: _JobModel, max_batch_bytes: int, preferred: int) -> None:
        self._model = model
        self._max_batch_bytes = max_batch_bytes
        self._preferred = preferred
        assert model.config is not None
        self._config = model.config
        self._datatypes = {s.name: s.datatype for s in model.config.inputs}

    @classmethod
    async def start(cls, config: ModelConfig, replicas: int | None, queue_rows: int) -> LocalRunner:
        """Load the model; ``ConfigError`` (naming the model) if it cannot be."""
        if not config.batched:
            raise ConfigError(
                f"model {config.name!r} takes no batch axis (max_batch_size = 0); "
                "inferd batch runs batched models only"
            )
        preload([f"inferd.backends.{config.backend}_backend"])
        model = _JobModel(job_config(config, replicas, queue_rows), ServerMetrics(), RowsPolicy(1))
        with _replicas_ignore_ctrl_c():
            try:
                await model.load()
            except BaseException:
                await model.close()
                raise
        return cls(model, config.batching.max_batch_bytes, config.batching.max_batch_size)

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._config.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._config.outputs

    @property
    def replicas(self) -> int:
        return self._config.instances

    @property
    def preferred_batch_size(self) -> int:
        return self._preferred

    @property
    def max_batch_bytes(self) -> int:
        return self._max_batch_bytes

    @property
    def fixed_batch_size(self) -> int | None:
        return None

    def reject(self, tensors: Tensors) -> dict[int, str]:
        """Nothing: the signature is checked per chunk, and a bad row fails when computed."""
        return {}

    async def infer(self, tensors: Tensors, batch_size: int) -> Tensors:
        """Submit the rows as one request; the batcher cuts it into batches of ``batch_size``."""
        self._model.job_policy.rows = batch_size
        options = RequestOptions(timeout_s=CHUNK_TIMEOUT_S)
        answer = await self._model.infer(tensors, self._datatypes, options)
        return answer.outputs

    def cost(self, price_per_hour: float, seconds: float) -> float:
        """Price times replica-hours (the replicas run for the whole job)."""
        return price_per_hour * self.replicas * seconds / 3600.0

    async def close(self) -> None:
        await self._model.close()


@contextlib.contextmanager
def _replicas_ignore_ctrl_c() -> Iterator[None]:
    """Start replicas with SIGINT ignored, which they inherit through the fork server.

    Ctrl-C in a terminal signals the whole process group: the job must get it (and finish its
    chunk in flight), the replicas must not (they would die under that very chunk). They still
    end with the job: a replica exits when its socket to the job closes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
