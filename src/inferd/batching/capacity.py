"""Room for batches in flight: what the batcher waits for before it forms a batch.

The replica pool provides it in production (one slot per ready replica); ``FixedCapacity`` is a
fixed number of slots, for tests and in-process use.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Capacity(Protocol):
    """Room for batches in flight (the replica pool, or a fixed number)."""

    async def acquire(self, timeout: float) -> bool: ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    @property
    def slots(self) -> int:
        """Batches that may be in flight at once now (ready replicas)."""


class FixedCapacity:
    """At most ``n`` batches in flight (the batcher's loop is its only caller of ``acquire``)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self.slots = n
        self._waiter: asyncio.Future[None] | None = None

    async def acquire(self, timeout: float) -> bool:
        if self._free == 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait((self._waiter,), timeout=timeout)
            finally:
                self._waiter = None
        return self.try_acquire()

    def try_acquire(self) -> bool:
        if self._free == 0:
            return False
        self._free -= 1
        return True

    def release(self) -> None:
        self._free += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
