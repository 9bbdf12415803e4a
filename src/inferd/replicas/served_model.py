"""One model as the server sees it: its replicas, its batcher, its metrics and its state."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.batching.batcher import Answer, BatcherConfig, DynamicBatcher, Padding
from inferd.batching.padding import resolve_follows
from inferd.batching.policy import BatchPolicy, DispatchPolicy
from inferd.batching.queue import QueueLimits
from inferd.batching.slo import SloController, SloTarget
from inferd.config import ModelConfig, TensorSpec, usable_cpus
from inferd.errors import (
    ConfigError,
    InferdError,
    InvalidRequest,
    ModelError,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
)
from inferd.metrics.registry import ModelMetrics
from inferd.replicas.pool import OnExit, ReplicaPool
from inferd.replicas.process_replica import ProcessReplica
from inferd.replicas.replica import Replica, ThreadReplica
from inferd.signature import SignatureCheck

Tensors = dict[str, np.ndarray]

logger = logging.getLogger("inferd.models")


class ModelState(enum.Enum):
    """Where a model is in its life (the names are the ones Triton's repository index uses)."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request scheduling: priority level and deadline."""

    priority: int = 0
    """1 = most urgent; 0 = the model's default level."""
    timeout_s: float | None = None
    """None: the model's default deadline."""


def replica_threads(config: ModelConfig) -> int:
    """Compute threads per replica: as configured, or the cores shared out among replicas."""
    if config.threads:
        return config.threads
    replicas = config.autoscaling.max_replicas if config.autoscaling else config.instances
    return max(1, usable_cpus() // replicas)


class ServedModel:
    """A model, its replica pool and batcher."""

    def __init__(
        self, name: str, config: ModelConfig | None, metrics: ModelMetrics, error: str | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.error = error
        self.metrics = metrics
        self.state = ModelState.UNAVAILABLE if error else ModelState.LOADING
        self.pool: ReplicaPool | None = None
        self.batcher: DynamicBatcher | None = None
        self.output_datatypes: dict[str, str] = {}
        self._signature: SignatureCheck | None = None
        self.ongoing = 0
        self.desired_replicas = 0
        self.last_request_at: float | None = None
        self.cold_start_needed = asyncio.Event()

    @property
    def version(self) -> str:
        """The served version ("1" unless the config says otherwise)."""
        return self.config.version if self.config else "1"

    @property
    def ready(self) -> bool:
        """Whether the model answers inference requests (a model scaled to zero does)."""
        return self.state is ModelState.READY

    # --- life ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """Start the first replicas, read the signature from them, start batching."""
        assert self.config is not None  # entries without a config are created UNAVAILABLE
        started = time.perf_counter()
        config = self.config
        self.pool = ReplicaPool(self.name, self._start_replica, idempotent=config.idempotent)
        self.pool.on_restart = self.metrics.on_replica_restart
        self.pool.on_change = self._on_pool_change
        self.desired_replicas = self._initial_replicas()
        await self.pool.start(self.desired_replicas)
        inputs, outputs = self.pool.signature()
        self.config = config = config.with_signature(inputs, outputs)
        self.output_datatypes = {s.name: s.datatype for s in config.outputs}
        self._signature = SignatureCheck(config)
        self.batcher = DynamicBatcher(
            self.name,
            self.pool.infer,
            self._policy(),
            self.pool,
            self._batcher_config(),
            observer=self.metrics,
        )
        self.batcher.start()
        self.state = ModelState.READY
        logger.info("model %r (%s) ready in %.2fs: %d replica(s), %s isolation, %d thread(s) each",
                    self.name, config.backend, time.perf_counter() - started, self.pool.current,
                    config.isolation, replica_threads(config))  # fmt: skip

    def _initial_replicas(self) -> int:
        assert self.config is not None
        scaling = self.config.autoscaling
        # A model that may scale to zero still starts one replica: its signature comes from it.
        return max(1, scaling.min_replicas) if scaling else self.config.instances

    async def _start_replica(self, index: int, on_exit: OnExit) -> Replica:
        assert self.config is not None
        if self.config.isolation == "thread":
            return await ThreadReplica.start(self.config, index)
        replica = ProcessReplica(self.config, index, replica_threads(self.config), on_exit)
        await replica.start()
        return replica

    def _policy(self) -> DispatchPolicy:
        assert self.config is not None
        b = self.config.batching
        if b.slo_p99_ms > 0:
            return SloController(SloTarget(b.slo_p99_ms / 1e3, max(1, b.max_batch_size)))
        return BatchPolicy(
            max(1, b.max_batch_size), b.max_queue_delay_ms / 1e3, b.preferred_batch_sizes
        )

    def _batcher_config(self) -> BatcherConfig:
        assert self.config is not None
        b = self.config.batching
        limits = QueueLimits(b.max_queue_rows, b.max_queue_bytes, b.priority_levels)
        padding = _padding(self.config) if b.variable_dims == "pad" else None
        timeout_s = b.timeout_ms / 1e3
        return BatcherConfig(
            b.max_batch_bytes,
            limits,
            self.config.batched,
            timeout_s,
            padding,
            idempotent=self.config.idempotent,
            # The SLO controller plans each batch's latency; one waiting at a replica would
            # break its plan.
            send_ahead=b.send_ahead and b.slo_p99_ms <= 0,
        )

    def _on_pool_change(self) -> None:
        if self.pool is not None:
            self.metrics.set_replicas(self.pool.current, self.desired_replicas)

    async def close(self) -> None:
        """Stop batching and stop the replicas."""
        if self.batcher is not None:
            await self.batcher.close()
        if self.pool is not None:
            await self.pool.close()

    # --- serving ------------------------------------------------------------------------------

    async def infer(
        self, inputs: Tensors, datatypes: Mapping[str, str], options: RequestOptions
    ) -> Answer:
        """Validate a request against the signature and compute it in a batch; count it."""
        if self.batcher is None or self._signature is None or self.config is None or not self.ready:
            raise ModelNotReady(self.not_ready_reason())
        started = time.monotonic()
        self.ongoing += 1
        self.last_request_at = started
        if self.pool is not None and not self.pool.ready_count:
            self.cold_start_needed.set()
        rows = 0
        outcome = "success"
        answer: Answer | None = None
        priority = self._priority(options)
        try:
            rows = self._signature.rows(inputs, datatypes)
            answer = await self.batcher.submit(inputs, rows, priority, options.timeout_s)
            return answer
        except BaseException as e:
            outcome = _outcome(e)
            raise
        finally:
            self.ongoing -= 1
            self._observe(outcome, time.monotonic() - started, rows, answer, priority, options)

    def admit_early(self, options: RequestOptions) -> None:
        """Refuse now (``Overloaded``, counted as shed) a request whose deadline the queue
        ahead already rules out, before its body is read: under overload a refusal then costs
        the front end a header, not a body."""
        if self.batcher is None or not self.ready:
            return
        try:
            self.batcher.check_admission(options.timeout_s)
        except Overloaded as e:
            self._observe(_outcome(e), 0.0, 0, None, self._priority(options), options)
            raise

    def _priority(self, options: RequestOptions) -> int:
        assert self.config is not None  # a model with a batcher has its config
        return options.priority or self.config.batching.default_priority

    def _observe(
        self,
        outcome: str,
        total_s: float,
        rows: int,
        answer: Answer | None,
        priority: int,
        options: RequestOptions,
    ) -> None:
        queue_s = answer.queue_s if answer else 0.0
        compute_s = answer.compute_s if answer else 0.0
        deadline = options.timeout_s
        self.metrics.observe_request(outcome, total_s, queue_s, compute_s, rows, priority, deadline)
        if outcome == "shed":
            self.metrics.on_shed()
        if self.batcher is not None:
            self.metrics.set_queue_depth(self.batcher.queued_rows)
            self.metrics.set_in_flight(self.ongoing)

    def cost_share(self, answer: Answer, rows: int) -> float:
        """This request's share of the cost of the batches it rode in."""
        return self.metrics.cost.request_share(answer.compute_s, answer.batch_rows, rows)

    def not_ready_reason(self) -> str:
        """Why the model does not serve, for 503 answers."""
        if self.state is ModelState.LOADING:
            return f"model {self.name!r} is still loading"
        return f"model {self.name!r} is not available: {self.error}"

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document."""
        config = self.config
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"inferd_{config.backend}" if config else "unknown",
            "inputs": [s.to_metadata() for s in config.inputs] if config else [],
            "outputs": [s.to_metadata() for s in config.outputs] if config else [],
        }


def _padding(config: ModelConfig) -> Padding:
    """Which axes vary, from the signature: every -1 after the batch axis."""

    def variable(specs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, ...]]:
        axes = {
            s.name: tuple(k for k, d in enumerate(s.shape) if k >= 1 and d == -1) for s in specs
        }
        return {name: found for name, found in axes.items() if found}

    inputs, outputs = variable(config.inputs), variable(config.outputs)
    try:
        follows = resolve_follows(inputs, outputs)
    except ValueError as e:
        raise ConfigError(f"model {config.name!r}: variable_dims = 'pad': {e}") from None
    return Padding(inputs, outputs, follows, config.batching.pad_value)


def _outcome(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, RequestTimeout):
        return "timeout"
    if isinstance(error, Overloaded):
        return "shed"
    if isinstance(error, InvalidRequest | PayloadTooLarge):
        return "client_error"
    if isinstance(error, ModelError):
        return "model_error"
    if isinstance(error, InferdError) and error.status_code == 503:
        return "unavailable"
    return "model_error"
