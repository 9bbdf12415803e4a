"""Loads the models of a repository and serves each through its batcher and replica pool.

A model that fails to load is kept, marked UNAVAILABLE with its error, so that the others are
served and the broken one answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inferd.batching.batcher import DynamicBatcher
from inferd.batching.policy import BatchPolicy
from inferd.config import ModelConfig
from inferd.errors import InferdError, ModelNotReady, NotFound
from inferd.replicas.pool import ReplicaPool
from inferd.replicas.replica import ThreadReplica
from inferd.repository import ModelEntry, load_model
from inferd.signature import check_inputs

Tensors = dict[str, np.ndarray]

logger = logging.getLogger("inferd.models")


class ModelState(enum.Enum):
    """Where a model is in its life (the names are the ones Triton's repository index uses)."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


class ServedModel:
    """One model as the server sees it: its config, state, and the way to run it."""

    def __init__(self, name: str, config: ModelConfig | None, error: str | None = None) -> None:
        self.name = name
        self.config = config
        self.error = error
        self.state = ModelState.UNAVAILABLE if error else ModelState.LOADING
        self._pool: ReplicaPool | None = None
        self._batcher: DynamicBatcher | None = None
        self._output_datatypes: dict[str, str] = {}

    @property
    def version(self) -> str:
        """The served version ("1" unless the config says otherwise)."""
        return self.config.version if self.config else "1"

    @property
    def output_datatypes(self) -> dict[str, str]:
        """Declared output name -> datatype (empty until loaded)."""
        return self._output_datatypes

    @property
    def ready(self) -> bool:
        """Whether the model answers inference requests."""
        return self.state is ModelState.READY

    def load(self) -> None:
        """Load every instance (blocking; run it off the event loop)."""
        assert self.config is not None  # entries without a config are created UNAVAILABLE
        started = time.perf_counter()
        backend, config = load_model(self.config)
        backends = [backend] + [load_model(config)[0] for _ in range(config.instances - 1)]
        self.config = config
        self._output_datatypes = {s.name: s.datatype for s in config.outputs}
        self._pool = ReplicaPool([ThreadReplica(self.name, b, i) for i, b in enumerate(backends)])
        logger.info(
            "model %r (%s) loaded in %.2fs: %d instance(s)",
            self.name,
            config.backend,
            time.perf_counter() - started,
            config.instances,
        )

    def start(self) -> None:
        """Start batching (on the event loop) once loaded."""
        assert self.config is not None and self._pool is not None
        batching = self.config.batching
        self._batcher = DynamicBatcher(
            self.name,
            self._pool.infer,
            BatchPolicy(max(1, batching.max_batch_size), batching.max_queue_delay_ms / 1e3),
            concurrency=self._pool.size,
            max_queue_rows=batching.max_queue_rows,
            batched=self.config.batched,
        )
        self._batcher.start()
        self.state = ModelState.READY

    async def infer(self, inputs: Tensors, datatypes: Mapping[str, str]) -> Tensors:
        """Validate a request against the signature and compute it in a batch."""
        if self._batcher is None or self.config is None or not self.ready:
            raise ModelNotReady(self.not_ready_reason())
        rows = check_inputs(self.config, inputs, datatypes)
        return await self._batcher.submit(inputs, rows)

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

    async def close(self) -> None:
        """Stop batching and release the replicas."""
        if self._batcher is not None:
            await self._batcher.close()
        if self._pool is not None:
            self._pool.close()


class ModelManager:
    """All models of the server, by name."""

    def __init__(self, entries: Sequence[ModelEntry]) -> None:
        self._models = {e.name: ServedModel(e.name, e.config, e.error) for e in entries}
        self.loaded = False

    @property
    def models(self) -> list[ServedModel]:
        """Every model, ready or not, in name order."""
        return [self._models[name] for name in sorted(self._models)]

    @property
    def ready(self) -> bool:
        """Loading has finished and at least one model serves."""
        return self.loaded and any(m.ready for m in self._models.values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model called ``name``; ``NotFound`` naming the available ones otherwise."""
        model = self._models.get(name)
        if model is None:
            available = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"unknown model {name!r}; available models: {available}")
        if version is not None and version != model.version:
            raise NotFound(
                f"model {name!r} has no version {version!r}; available versions: {model.version}"
            )
        return model

    async def load(self) -> None:
        """Load the models one after another off the event loop, then start them."""
        for model in self._models.values():
            if model.state is not ModelState.LOADING:
                logger.error("model %r is not available: %s", model.name, model.error)
                continue
            try:
                await asyncio.to_thread(model.load)
            except InferdError as e:
                model.state, model.error = ModelState.UNAVAILABLE, e.message
                logger.error("model %r failed to load: %s", model.name, e.message)
                continue
            except Exception as e:  # a broken model file must not stop the others
                model.state, model.error = ModelState.UNAVAILABLE, f"{type(e).__name__}: {e}"
                logger.exception("model %r failed to load", model.name)
                continue
            model.start()
        self.loaded = True

    async def close(self) -> None:
        """Stop every model."""
        await asyncio.gather(*(m.close() for m in self._models.values()))
