"""A model's replicas: starting, routing, healing and draining them.

The pool hands the batcher *capacity* (one slot per batch a ready replica may hold), routes
each batch to the replica with the least outstanding work, retries a batch once elsewhere when
its replica dies (for idempotent models), restarts dead replicas with exponential backoff, and
scales up or down on request, draining a replica before stopping it so no request is cut.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from inferd.batching.batcher import Computed
from inferd.clock import Clock, MonotonicClock
from inferd.config import TensorSpec
from inferd.errors import InferdError, ReplicaUnavailable, RequestTimeout
from inferd.replicas.replica import Replica
from inferd.replicas.router import Router

Tensors = dict[str, np.ndarray]
OnExit = Callable[[Replica], None]
ReplicaFactory = Callable[[int, OnExit], Awaitable[Replica]]
"""Start replica number ``index``; ``on_exit`` is called if it dies later."""

logger = logging.getLogger("inferd.replicas")


class SlotState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    DEAD = "dead"


@dataclass(slots=True)
class _Slot:
    index: int
    state: SlotState
    replica: Replica | None = None
    outstanding: int = 0
    last_done: float = 0.0
    """When its last batch came back: the next one queued there started computing then."""
    started_at: float = 0.0
    failures: int = 0
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential backoff for restarting dead replicas."""

    initial_s: float = 0.5
    max_s: float = 30.0
    stable_after_s: float = 30.0
    """A replica that lived this long resets the backoff."""

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.initial_s * 2 ** max(0, failures - 1)))


class ReplicaPool:
    """The replicas of one model."""

    def __init__(
        self,
        name: str,
        factory: ReplicaFactory,
        idempotent: bool = True,
        restart: RestartPolicy | None = None,
        clock: Clock | None = None,
        wait_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self._factory = factory
        self._idempotent = idempotent
        self._restart = restart or RestartPolicy()
        self._clock = clock or MonotonicClock()
        self._wait_timeout_s = wait_timeout_s
        self._slots: list[_Slot] = []
        self._next_index = 0
        self._taken = 0
        self._ready = 0
        self._changed: asyncio.Future[None] | None = None
        self._router = Router()
        self._closing = False
        self.restarts = 0
        self.on_change: Callable[[], None] | None = None
        self.on_restart: Callable[[str], None] | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        """Replicas that take batches now (counted on change: it is read on every request)."""
        return self._ready

    def _count_ready(self) -> None:
        self._ready = sum(s.state is SlotState.READY for s in self._slots)

    def _set_state(self, slot: _Slot, state: SlotState) -> None:
        slot.state = state
        self._count_ready()

    @property
    def current(self) -> int:
        """Replicas that exist and are not being drained (ready, starting or restarting)."""
        return sum(s.state is not SlotState.DRAINING for s in self._slots)

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The signature the first ready replica read from its model."""
        for slot in self._slots:
            if slot.replica is not None:
                return slot.replica.signature
        return (), ()

    # --- capacity for the batcher ----------------------------------------------------------

    async def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for room for one more batch; True if taken."""
        if not self._has_room():
            await self._wait_for_change(timeout)
        return self.try_acquire()

    def try_acquire(self) -> bool:
        """Take room for one batch if there is some, without waiting."""
        if not self._has_room():
            return False
        self._taken += 1
        return True

    @property
    def room_ahead(self) -> bool:
        """Whether a batch may go to wait at a busy replica: one per ready replica."""
        return self.ready_count <= self._taken < 2 * self.ready_count

    def try_acquire_ahead(self) -> bool:
        """Take room for a batch to wait at a busy replica, if there is some."""
        if not self.room_ahead:
            return False
        self._taken += 1
        return True

    def nudge(self) -> None:
        """Wake the batcher's ``acquire``: a full batch may go ahead."""
        self._wake()

    def release(self) -> None:
        """Give back the room taken by ``acquire`` or ``try_acquire_ahead``."""
        self._taken -= 1
        self._wake()

    @property
    def slots(self) -> int:
        """Batches that may compute at once: one per ready replica."""
        return self.ready_count

    def _has_room(self) -> bool:
        return self._taken < self.ready_count

    async def _wait_for_change(self, timeout: float) -> None:
        """Sleep until the pool changes (a replica ready, dead, drained; room given back)."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._changed,), timeout=timeout)

    def _wake(self) -> None:
        # A plain future, not a Condition: waking is on the hot path (every batch), and a
        # future wakes every waiter without a task or a lock.
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _state_changed(self) -> None:
        self._count_ready()
        self._wake()
        if self.on_change is not None:
            self.on_change()

    # --- computing --------------------------------------------------------------------------

    async def infer(self, inputs: Tensors) -> Computed:
        """Compute one batch; retried once on another replica if its replica dies."""
        try:
            return await self._infer_once(inputs)
        except ReplicaUnavailable as first:
            if not self._idempotent:
                raise ReplicaUnavailable(
                    f"{first.message}; not retried: model {self.name!r} is not idempotent"
                ) from None
            logger.warning("model %r: retrying a batch after: %s", self.name, first.message)
            return await self._infer_once(inputs)

    async def _infer_once(self, inputs: Tensors) -> Computed:
        slot = await self._choose()
        slot.outstanding += 1
        sent = self._clock.now()
        try:
            assert slot.replica is not None
            outputs = await slot.replica.infer(inputs)
            # A replica computes its batches in the order they came: one sent while another
            # computed started when that one came back.
            done = self._clock.now()
            busy = done - max(sent, slot.last_done)
            slot.last_done = done
            return Computed(outputs, busy)
        finally:
            slot.outstanding -= 1
            if slot.state is SlotState.DRAINING and slot.outstanding == 0:
                self._wake()

    async def _choose(self) -> _Slot:
        deadline = self._clock.now() + self._wait_timeout_s
        while True:
            ready = [s.state is SlotState.READY for s in self._slots]
            index = self._router.choose([s.outstanding for s in self._slots], ready)
            if index is not None:
                return self._slots[index]
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                raise RequestTimeout(f"model {self.name!r}: no replica became ready in time")
            await self._wait_for_change(min(remaining, 1.0))

    # --- scaling ---------------------------------------------------------------------------

    async def scale_to(self, target: int) -> None:
        """Start or drain replicas until ``target`` are running or starting."""
        live = [s for s in self._slots if s.state is not SlotState.DRAINING]
        for _ in range(target - len(live)):
            self._add_slot()
        surplus = sorted(live, key=lambda s: (s.state is SlotState.READY, s.outstanding))
        for slot in surplus[: max(0, len(live) - target)]:
            self._set_state(slot, SlotState.DRAINING)
            slot.task = asyncio.get_running_loop().create_task(self._drain(slot))
        self._state_changed()

    async def start(self, count: int) -> None:
        """Start ``count`` replicas and wait for them; raises the first one's load error."""
        slots = [self._add_slot(launch=False) for _ in range(count)]
        results = await asyncio.gather(*(self._launch(s) for s in slots), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and self.ready_count == 0:
            raise errors[0]

    def _add_slot(self, launch: bool = True) -> _Slot:
        slot = _Slot(self._next_index, SlotState.STARTING)
        self._next_index += 1
        self._slots.append(slot)
        if launch:
            slot.task = asyncio.get_running_loop().create_task(self._launch_logged(slot))
        return slot

    async def _launch(self, slot: _Slot) -> None:
        replica = await self._factory(slot.index, lambda r: self._on_exit(slot, r))
        if slot.state is SlotState.DRAINING or self._closing:
            await replica.close()
            return
        slot.replica, slot.started_at = replica, self._clock.now()
        self._set_state(slot, SlotState.READY)
        self._state_changed()

    async def _launch_logged(self, slot: _Slot) -> None:
        try:
            await self._launch(slot)
        except InferdError as e:
            logger.error(
                "model %r: replica %d failed to start: %s", self.name, slot.index, e.message
            )
            self._set_state(slot, SlotState.DEAD)
            self._schedule_restart(slot)

    def _on_exit(self, slot: _Slot, replica: Replica) -> None:
        if self._closing or slot.state is SlotState.DRAINING:
            return
        slot.replica = None
        self._set_state(slot, SlotState.DEAD)
        lived = self._clock.now() - slot.started_at
        slot.failures = 1 if lived >= self._restart.stable_after_s else slot.failures + 1
        self._state_changed()
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: _Slot) -> None:
        if self._closing:
            return
        delay = self._restart.delay(max(1, slot.failures))
        logger.warning("model %r: restarting replica %d in %.1fs", self.name, slot.index, delay)
        slot.task = asyncio.get_running_loop().create_task(self._restart_later(slot, delay))

    async def _restart_later(self, slot: _Slot, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closing or slot.state is not SlotState.DEAD:
            return
        self._set_state(slot, SlotState.STARTING)
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart("crash")
        await self._launch_logged(slot)

    async def _drain(self, slot: _Slot, timeout: float = 60.0) -> None:
        deadline = self._clock.now() + timeout
        while slot.outstanding > 0 and self._clock.now() < deadline:
            await self._wait_for_change(1.0)
        if slot.replica is not None:
            await slot.replica.close()
        if slot in self._slots:
            self._slots.remove(slot)
            self._count_ready()
        self._state_changed()

    async def close(self) -> None:
        """Stop every replica."""
        self._closing = True
        for slot in self._slots:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        await asyncio.gather(*(s.replica.close() for s in self._slots if s.replica is not None))
        self._slots.clear()
        self._count_ready()
