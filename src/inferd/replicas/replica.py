"""A replica is one loaded copy of a model behind one small interface: ``infer(batch)``.

Two kinds implement it: ``process_replica.ProcessReplica`` (the default: a process of its own,
so a crash or a runaway model cannot take the server down) and ``ThreadReplica`` (a thread in the
server's process: no isolation, but no inter-process hop, for the cheapest models). A Ray actor
would be a third.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from inferd.backends.base import Backend
from inferd.config import ModelConfig, TensorSpec
from inferd.errors import InferdError, ModelError
from inferd.repository import load_model

Tensors = dict[str, np.ndarray]
Signature = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]

logger = logging.getLogger("inferd.replicas")


class Replica(Protocol):
    """One copy of a model that computes batches."""

    @property
    def signature(self) -> Signature:
        """Inputs and outputs as the loaded model declares them."""

    async def infer(self, inputs: Tensors) -> Tensors:
        """Compute one batch; model failures raise ``ModelError``, a dead replica
        ``ReplicaUnavailable``."""

    async def close(self) -> None:
        """Stop the replica and release its resources."""


class ThreadReplica:
    """Runs a loaded backend on a dedicated thread of the server's process."""

    def __init__(self, config: ModelConfig, backend: Backend, index: int = 0) -> None:
        self.config = config
        self._backend = backend
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{config.name}-{index}")

    @classmethod
    async def start(cls, config: ModelConfig, index: int) -> ThreadReplica:
        """Load the model off the event loop."""
        backend, resolved = await asyncio.to_thread(load_model, config)
        return cls(resolved, backend, index)

    @property
    def signature(self) -> Signature:
        return self.config.inputs, self.config.outputs

    async def infer(self, inputs: Tensors) -> Tensors:
        loop = asyncio.get_running_loop()
        name = self.config.name
        return await loop.run_in_executor(
            self._executor, predict_checked, name, self._backend, inputs
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def predict_checked(model_name: str, backend: Backend, inputs: Tensors) -> Tensors:
    """Run ``backend.predict``; anything model code raises becomes a ``ModelError``."""
    try:
        outputs = backend.predict(inputs)
    except InferdError:
        raise
    except BaseException as e:  # SystemExit from model code must not end the server
        logger.warning("model %r raised %s: %s", model_name, type(e).__name__, e)
        raise ModelError(f"model {model_name!r} raised {type(e).__name__}: {e}") from None
    if not isinstance(outputs, dict) or not all(
        isinstance(v, np.ndarray) for v in outputs.values()
    ):
        raise ModelError(
            f"model {model_name!r}: predict must return a dict of numpy arrays, "
            f"got {type(outputs).__name__}"
        )
    return outputs
