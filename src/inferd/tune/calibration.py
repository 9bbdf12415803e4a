"""The model's own compute time per batch size, measured once in this process before any trial.

A batch whose compute alone exceeds the latency target can never meet it, so those batch sizes
leave the search space before a single server starts. Inputs are random arrays of the declared
signature (variable non-batch dimensions set to 1). Sizes are timed from small to large, and
timing stops at the first size over the limit: larger batches only take longer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np

from inferd.backends.base import Tensors
from inferd.config import ModelConfig, TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import InferdError
from inferd.repository import load_model

logger = logging.getLogger("inferd.tune")

MIN_REPEATS: Final = 3
MAX_REPEATS: Final = 20
TIME_PER_SIZE_S: Final = 0.3


def compute_ms_by_batch(
    model: ModelConfig, sizes: Sequence[int], limit_ms: float
) -> dict[int, float]:
    """Compute time (ms) of one batch of each size, up to the first over ``limit_ms``: the
    fastest of several runs, since pruning must not drop a size because the machine was busy.

    Returns an empty dict (and logs why) when the model cannot be run on random inputs here:
    the search then simply keeps every batch size.
    """
    try:
        backend, loaded = load_model(model)
    except InferdError as e:
        logger.warning("calibration skipped: %s", e.message)
        return {}
    timings: dict[int, float] = {}
    rng = np.random.default_rng(0)
    for size in sorted(sizes):
        try:
            inputs = random_inputs(loaded.inputs, size, rng)
            timings[size] = _fastest_ms(lambda: backend.predict(inputs))  # noqa: B023
        except Exception as e:  # a model that cannot take random inputs is tuned without pruning
            logger.warning("calibration stopped at batch %d: %s: %s", size, type(e).__name__, e)
            break
        if timings[size] > limit_ms:
            break
    return timings


def random_inputs(specs: Sequence[TensorSpec], rows: int, rng: np.random.Generator) -> Tensors:
    """Random arrays for ``specs``: the batch axis ``rows`` long, other variable axes 1."""
    inputs = {}
    for spec in specs:
        shape = tuple(rows if i == 0 else (1 if d < 0 else d) for i, d in enumerate(spec.shape))
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, b"x", dtype=object)
        elif spec.datatype == "BOOL":
            inputs[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            dtype = to_numpy_dtype(spec.datatype)
            inputs[spec.name] = (rng.random(shape) * 4).astype(dtype)
    return inputs


def _fastest_ms(call: Callable[[], object]) -> float:
    call()  # warm-up: first calls allocate
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < MIN_REPEATS or (
        len(samples) < MAX_REPEATS and time.perf_counter() - started < TIME_PER_SIZE_S
    ):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    return min(samples)
