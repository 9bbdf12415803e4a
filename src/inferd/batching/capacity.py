"""Room for batches in flight: what the batcher waits for before it forms a batch.

The replica pool provides it in production (one slot per ready replica); ``FixedCapacity`` is a
fixed number of slots, for tests and in-process use. Room *ahead* is for a batch that waits at a
busy replica behind the one it computes, so that the replica starts it without waiting for the
round trip to the front end; the batcher uses it only for full batches.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Capacity(Protocol):
    """Room for batches in flight (the replica pool, or a fixed number)."""

    async def acquire(self, timeout: float) -> bool: ...

    def try_acquire(self) -> bool: ...

    @property
    def room_ahead(self) -> bool:
        """Whether ``try_acquire_ahead`` would succeed now."""

    def try_acquire_ahead(self) -> bool:
        """Take room for a batch to wait behind one computing, if there is some."""

    def nudge(self) -> None:
        """Wake a waiting ``acquire`` (it returns False unless room came): a full batch is
        queued that may go ahead."""

    def release(self) -> None: ...

    @property
    def slots(self) -> int:
        """Batches that may be in flight at once now (ready replicas)."""


class FixedCapacity:
    """At most ``n`` batches in flight, and ``ahead`` more waiting behind them (the batcher's
    loop is its only caller of ``acquire``)."""

    def __init__(self, n: int, ahead: int = 0) -> None:
        self._ahead = ahead
        self._taken = 0
        self.slots = n
        self._waiter: asyncio.Future[None] | None = None

    async def acquire(self, timeout: float) -> bool:
        if self._taken >= self.slots:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait((self._waiter,), timeout=timeout)
            finally:
                self._waiter = None
        return self.try_acquire()

    def try_acquire(self) -> bool:
        if self._taken >= self.slots:
            return False
        self._taken += 1
        return True

    @property
    def room_ahead(self) -> bool:
        return self.slots <= self._taken < self.slots + self._ahead

    def try_acquire_ahead(self) -> bool:
        if not self.room_ahead:
            return False
        self._taken += 1
        return True

    def nudge(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def release(self) -> None:
        self._taken -= 1
        self.nudge()
