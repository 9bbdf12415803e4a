"""A replica is one loaded copy of a model behind one small interface: ``infer(batch)``.

``ThreadReplica`` runs its copy on a thread of its own, so the event loop never computes. The
``Replica`` protocol is the transport seam: a process replica (or a Ray actor) implements the
same two methods.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from inferd.backends.base import Backend
from inferd.errors import InferdError, ModelError

Tensors = dict[str, np.ndarray]

logger = logging.getLogger("inferd.replicas")


class Replica(Protocol):
    """One copy of a model that computes one batch at a time."""

    async def infer(self, inputs: Tensors) -> Tensors:
        """Compute one batch; model failures raise ``ModelError``."""

    def close(self) -> None:
        """Release the replica's resources."""


class ThreadReplica:
    """Runs a loaded backend on a dedicated thread."""

    def __init__(self, model_name: str, backend: Backend, index: int = 0) -> None:
        self._model_name = model_name
        self._backend = backend
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{model_name}-{index}")

    async def infer(self, inputs: Tensors) -> Tensors:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._predict, inputs)

    def _predict(self, inputs: Tensors) -> Tensors:
        try:
            outputs = self._backend.predict(inputs)
        except InferdError:
            raise
        except BaseException as e:  # SystemExit from model code must not end the server
            logger.warning("model %r raised %s: %s", self._model_name, type(e).__name__, e)
            raise ModelError(f"model {self._model_name!r} raised {type(e).__name__}: {e}") from None
        if not isinstance(outputs, dict) or not all(
            isinstance(v, np.ndarray) for v in outputs.values()
        ):
            raise ModelError(
                f"model {self._model_name!r}: predict must return a dict of numpy arrays, "
                f"got {type(outputs).__name__}"
            )
        return outputs

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
