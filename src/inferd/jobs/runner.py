"""What a batch job computes on: the model in this process's replicas, or a running inferd.

The job sees them (and an LLM, ``llm.py``) through ``Runner``: the model's signature,
``infer(tensors, batch_size)`` for many rows at once (computed in batches of exactly
``batch_size`` rows), and what the replicas have cost so far. Errors split in two:
``ROW_ERRORS`` are the rows' fault (the job isolates the bad rows and records them),
``TRANSIENT_ERRORS`` are the machinery's (the job retries, then stops, resumable).
"""

from __future__ import annotations

from typing import Final, Protocol

import numpy as np

from inferd.config import TensorSpec
from inferd.errors import (
    InvalidRequest,
    ModelError,
    ModelNotReady,
    Overloaded,
    ReplicaUnavailable,
    RequestTimeout,
)

Tensors = dict[str, np.ndarray]

ROW_ERRORS: Final = (InvalidRequest, ModelError)
TRANSIENT_ERRORS: Final = (ReplicaUnavailable, ModelNotReady, Overloaded, RequestTimeout)
CHUNK_TIMEOUT_S: Final = 3600.0
"""How long one chunk may take before it counts as lost (and is tried again)."""


class Runner(Protocol):
    """A model that computes many rows per call."""

    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def replicas(self) -> int:
        """Replicas that compute (what the price per hour is multiplied by)."""
        ...

    @property
    def preferred_batch_size(self) -> int:
        """Where the batch-size search starts (the model's configured batch size)."""
        ...

    @property
    def max_batch_bytes(self) -> int:
        """Input bytes one batch may hold."""
        ...

    @property
    def fixed_batch_size(self) -> int | None:
        """A batch size to use instead of measuring (an LLM engine batches by itself)."""
        ...

    def reject(self, tensors: Tensors) -> dict[int, str]:
        """Rows it can tell are bad before computing them (offset: why); they are skipped."""
        ...

    async def infer(self, tensors: Tensors, batch_size: int) -> Tensors:
        """Outputs for every row of ``tensors``, computed ``batch_size`` rows at a time."""
        ...

    def cost(self, price_per_hour: float, seconds: float) -> float:
        """What the computing replicas cost over the job's ``seconds``."""
        ...

    async def close(self) -> None: ...
