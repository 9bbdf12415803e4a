"""A model's replicas and the choice of which one computes the next batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inferd.replicas.replica import Replica

Tensors = dict[str, np.ndarray]


def least_outstanding(outstanding: Sequence[int]) -> int:
    """Index of the replica with the fewest batches in flight (the first among equals)."""
    return min(range(len(outstanding)), key=outstanding.__getitem__)


class ReplicaPool:
    """Routes each batch to the replica with the least outstanding work."""

    def __init__(self, replicas: Sequence[Replica]) -> None:
        if not replicas:
            raise ValueError("a pool needs at least one replica")
        self._replicas = list(replicas)
        self._outstanding = [0] * len(self._replicas)

    @property
    def size(self) -> int:
        """Number of replicas."""
        return len(self._replicas)

    async def infer(self, inputs: Tensors) -> Tensors:
        """Compute one batch on the least busy replica."""
        index = least_outstanding(self._outstanding)
        self._outstanding[index] += 1
        try:
            return await self._replicas[index].infer(inputs)
        finally:
            self._outstanding[index] -= 1

    def close(self) -> None:
        """Close every replica."""
        for replica in self._replicas:
            replica.close()
