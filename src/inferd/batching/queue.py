"""The queue of requests waiting for a batch: priorities, deadlines, and bounds in rows and bytes.

Pure bookkeeping (no asyncio, no numpy): an entry carries an opaque ``ticket`` that the batcher
uses to answer it. Priority levels follow Triton: 1 is the most urgent, larger numbers wait
behind smaller ones, and a batch is filled from the most urgent level down.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from inferd.errors import Overloaded, PayloadTooLarge


@dataclass(slots=True)
class Entry:
    """One queued request (or one piece of a request larger than a batch)."""

    rows: int
    nbytes: int
    key: Hashable
    arrival: float
    deadline: float = math.inf
    priority: int = 1
    ticket: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """How much may wait."""

    max_rows: int = 8192
    max_bytes: int = 512 * 1024 * 1024
    priority_levels: int = 1


class RequestQueue:
    """Per-priority FIFO queues with a shared bound in rows and in bytes."""

    def __init__(self, name: str, limits: QueueLimits) -> None:
        self.name = name
        self.limits = limits
        self._levels: list[deque[Entry]] = [deque() for _ in range(limits.priority_levels)]
        self.rows = 0
        self.nbytes = 0
        self._count = 0  # kept, not summed: len() is asked several times per request

    def __len__(self) -> int:
        return self._count

    def check_fits(self, rows: int, nbytes: int) -> None:
        """Raise if a request this large could never be queued (a client error, not overload)."""
        if rows > self.limits.max_rows or nbytes > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"request of {rows} rows / {nbytes} bytes is larger than model {self.name!r} "
                f"can ever queue ({self.limits.max_rows} rows, {self.limits.max_bytes} bytes; "
                "max_queue_rows, max_queue_bytes); send it in smaller requests"
            )

    def push(self, entries: list[Entry]) -> None:
        """Queue all of ``entries`` (the pieces of one request) or none: ``Overloaded`` if full."""
        rows = sum(e.rows for e in entries)
        nbytes = sum(e.nbytes for e in entries)
        if self.rows + rows > self.limits.max_rows or self.nbytes + nbytes > self.limits.max_bytes:
            raise Overloaded(
                f"model {self.name!r} has {self.rows} rows ({self.nbytes} bytes) queued, its "
                f"limit is {self.limits.max_rows} rows / {self.limits.max_bytes} bytes; "
                "retry later",
                retry_after=1.0,
            )
        for entry in entries:
            self._levels[self._level(entry.priority)].append(entry)
        self._count += len(entries)
        self.rows += rows
        self.nbytes += nbytes

    def _level(self, priority: int) -> int:
        return min(max(priority, 1), len(self._levels)) - 1

    def oldest_arrival(self) -> float:
        """Arrival time of the request that will lead the next batch."""
        head = self._head()
        return head.arrival if head is not None else math.inf

    def _head(self) -> Entry | None:
        for level in self._levels:
            if level:
                return level[0]
        return None

    def __iter__(self) -> Iterator[Entry]:
        for level in self._levels:
            yield from level

    def remove_if(self, predicate: Any) -> list[Entry]:
        """Remove and return the entries for which ``predicate(entry)`` is true."""
        removed: list[Entry] = []
        for i, level in enumerate(self._levels):
            if not any(predicate(entry) for entry in level):
                continue  # the usual case: nothing to drop, nothing to rebuild
            kept: deque[Entry] = deque()
            for entry in level:
                (removed if predicate(entry) else kept).append(entry)
            self._levels[i] = kept
        self._forget(removed)
        return removed

    def _forget(self, entries: list[Entry]) -> None:
        for e in entries:
            self.rows -= e.rows
            self.nbytes -= e.nbytes
        self._count -= len(entries)

    def take(self, max_rows: int, max_bytes: int) -> list[Entry]:
        """The next batch (``peek``), removed from the queue."""
        batch = self.peek(max_rows, max_bytes)
        self.remove(batch)
        return batch

    def peek(self, max_rows: int, max_bytes: int) -> list[Entry]:
        """The next batch, left in the queue: the most urgent oldest request, then compatible
        ones, level by level.

        Compatible means same stacking ``key``; a request that would overflow the rows or bytes
        is skipped (later ones may still fit), so one large request never blocks small ones.
        The first request always goes, even alone over ``max_bytes``.
        """
        head = self._head()
        if head is None:
            return []
        batch: list[Entry] = []
        budget = _Budget(max_rows, max_bytes)
        for level in self._levels:
            for entry in level:
                if budget.full:
                    return batch
                if entry is head or (entry.key == head.key and budget.fits(entry)):
                    budget.add(entry)
                    batch.append(entry)
        return batch

    def remove(self, batch: list[Entry]) -> None:
        """Remove ``batch`` (from ``peek``): entries skipped over keep their order in front."""
        chosen = {id(e) for e in batch}
        left = len(batch)
        for i, level in enumerate(self._levels):
            skipped: deque[Entry] = deque()
            while level and left:
                entry = level.popleft()
                if id(entry) in chosen:
                    left -= 1
                else:
                    skipped.append(entry)
            if skipped:
                skipped.extend(level)
                self._levels[i] = skipped
            if not left:
                break
        self._forget(batch)


class _Budget:
    """Rows and bytes left in the batch being formed."""

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.rows = self.nbytes = 0

    @property
    def full(self) -> bool:
        return self.rows >= self.max_rows

    def fits(self, entry: Entry) -> bool:
        return (
            self.rows + entry.rows <= self.max_rows and self.nbytes + entry.nbytes <= self.max_bytes
        )

    def add(self, entry: Entry) -> None:
        self.rows += entry.rows
        self.nbytes += entry.nbytes
