"""Which replica computes the next batch: the least busy available one, equals taken in turn.

Pure: the pool passes in its counts and flags and applies the choice.
"""

from __future__ import annotations

from collections.abc import Sequence


class Router:
    """Least-outstanding choice with a rotating start, so equally busy replicas share the load."""

    __slots__ = ("_cursor",)

    def __init__(self) -> None:
        self._cursor = 0

    def choose(self, outstanding: Sequence[int], available: Sequence[bool]) -> int | None:
        """Index of the available replica with the fewest batches in flight; None if none is."""
        index = least_busy(outstanding, available, self._cursor)
        if index is not None:
            self._cursor = index + 1  # the next tie goes to the replica after this one
        return index


def least_busy(outstanding: Sequence[int], available: Sequence[bool], start: int = 0) -> int | None:
    """The available index with the fewest outstanding batches, the first from ``start`` on ties."""
    if len(outstanding) != len(available):
        raise ValueError(f"{len(outstanding)} outstanding counts for {len(available)} replicas")
    count = len(outstanding)
    best: int | None = None
    for step in range(count):
        index = (start + step) % count
        if available[index] and (best is None or outstanding[index] < outstanding[best]):
            best = index
    return best
