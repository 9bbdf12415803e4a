"""Putting requests together into one batch along the batch axis, and checking what comes back."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from inferd.batching.queue import Entry
from inferd.errors import ModelError

Tensors = dict[str, np.ndarray]


def stack_key(inputs: Tensors) -> Hashable:
    """Requests with equal keys can be concatenated along the batch axis."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


def check_rows(name: str, outputs: Tensors, total: int) -> None:
    """Model ``name`` must return one output row per input row of the batch."""
    for output, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
            raise ModelError(
                f"model {name!r} returned {got} in output {output!r} for a batch of "
                f"{total} rows; predict must return one row per input row"
            )


def concatenate(batch: list[Entry]) -> Tensors:
    """The batch's inputs stacked along axis 0 (a lone request's arrays, uncopied)."""
    if len(batch) == 1:
        inputs: Tensors = batch[0].ticket.inputs
        return inputs
    names = batch[0].ticket.inputs.keys()
    return {n: np.concatenate([e.ticket.inputs[n] for e in batch]) for n in names}
