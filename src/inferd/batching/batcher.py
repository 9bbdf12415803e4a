"""The dynamic batcher: requests in, batches out to a ``run_batch`` coroutine, answers fanned back.

One asyncio task per model forms batches whenever the replicas have room (``Capacity``); each
batch runs as its own task. The batcher knows nothing of models, threads or processes: it is
handed a coroutine that computes one batch and a capacity to wait on. What to take and when to
go is the policy's call (``policy.BatchPolicy`` or the SLO controller).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from inferd.batching.capacity import Capacity
from inferd.batching.padding import pad_and_stack, pad_key, unpad
from inferd.batching.policy import DispatchPolicy, split_rows
from inferd.batching.queue import Entry, QueueLimits, RequestQueue
from inferd.batching.stacking import check_rows, concatenate, stack_key
from inferd.clock import Clock, MonotonicClock
from inferd.errors import InferdError, ModelError, Overloaded, ReplicaUnavailable, RequestTimeout

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Computed:
    """A batch's outputs and how long its replica worked on it, where that differs from the
    round trip: a batch sent ahead waits at the replica behind the one it computes."""

    outputs: Tensors
    busy_s: float


RunBatch = Callable[[Tensors], Awaitable[Tensors | Computed]]

logger = logging.getLogger("inferd.batching")

# The loop re-checks its state at least this often even if nothing wakes it (every wait is bounded).
_IDLE_POLL_S = 1.0
_ADMIT_SHARE = 0.75


class BatchObserver(Protocol):
    """Told about every computed batch (the model's metrics)."""

    def observe_batch(self, rows: int, max_rows: int, compute_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Padding:
    """Variable axes to pad when stacking requests, and how outputs are cut back."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    follows: dict[str, str]
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """Limits of one model's batches and queue."""

    max_batch_bytes: int = 64 * 1024 * 1024
    limits: QueueLimits = field(default_factory=QueueLimits)
    batched: bool = True
    default_timeout_s: float = 60.0
    padding: Padding | None = None
    """None: only requests of equal shapes share a batch."""
    idempotent: bool = True
    """False: a failed batch is never computed again, not even one request at a time."""
    send_ahead: bool = False
    """Send a full batch to a busy replica, to wait there behind the one it computes: the
    replica then never idles through the round trip to the front end between batches."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A request's outputs and what it cost in time."""

    outputs: Tensors
    queue_s: float
    compute_s: float
    batch_rows: int
    """Rows in the batch(es) it rode in, for its share of the cost."""


@dataclass(slots=True)
class _Ticket:
    inputs: Tensors
    future: asyncio.Future[tuple[Tensors, float, float, int]]


class DynamicBatcher:
    """Groups concurrent requests of one model into batches."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        policy: DispatchPolicy,
        capacity: Capacity,
        config: BatcherConfig | None = None,
        clock: Clock | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._observer = observer
        self._run_batch = run_batch
        self._policy = policy
        self._capacity = capacity
        self._config = config or BatcherConfig()
        self._clock = clock or MonotonicClock()
        self._queue = RequestQueue(name, self._config.limits)
        self._waiter: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._ahead: dict[asyncio.Task[None], list[Entry]] = {}
        """Batches sent ahead, while they may still be waiting at their replica."""
        self._rows_per_s = 0.0  # one replica's speed, smoothed over recent batches

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._queue.rows

    @property
    def queued_requests(self) -> int:
        """Requests (or request pieces) waiting for a batch."""
        return len(self._queue)

    def start(self) -> None:
        """Start forming batches (call from the event loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._form_batches(), name=f"batcher-{self.name}"
            )

    async def close(self) -> None:
        """Stop forming batches, wait for running ones, and fail whatever is still queued."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.wait((self._loop_task,), timeout=5.0)
            self._loop_task = None
        if self._running:
            await asyncio.wait(self._running, timeout=30.0)
        for entry in self._queue.remove_if(lambda e: True):
            _settle(entry.ticket.future, error=InferdError(f"model {self.name!r} is shutting down"))

    # --- submitting -----------------------------------------------------------------------

    async def submit(
        self, inputs: Tensors, rows: int, priority: int = 1, timeout_s: float | None = None
    ) -> Answer:
        """Queue one request of ``rows`` rows and wait for its outputs, at most ``timeout_s``.

        A request larger than a batch is cut into pieces that ride in separate batches and are
        put back together in order. Past the deadline the request is answered with
        ``RequestTimeout`` and, if it has not started computing, never computed.
        """
        now = self._clock.now()
        timeout = timeout_s if timeout_s is not None else self._config.default_timeout_s
        nbytes = sum(a.nbytes for a in inputs.values())
        self._queue.check_fits(rows, nbytes)
        self._admit(rows, timeout)
        entries = self._entries(inputs, rows, nbytes, now, now + timeout, priority)
        if self._can_go_now(entries, now):
            # Idle model, free replica, nothing to wait for: compute in this task, skipping the
            # hand-over to the batching loop (its wake-up costs more than the rest of the path).
            self._policy.on_arrival(now, rows)
            await self._run(entries)
            self._policy.on_request_done(self._clock.now() - now)
            return _join([entries[0].ticket.future.result()])
        self._queue.push(entries)
        self._policy.on_arrival(now, rows)
        self._wake()
        if self._full_batch_queued() and self._capacity.room_ahead:
            self._capacity.nudge()  # the loop may be waiting for room: this batch may go ahead
        futures = [e.ticket.future for e in entries]
        # A timer rather than wait_for: no extra future or task per request on the hot path.
        expiry = asyncio.get_running_loop().call_later(timeout, self._expire, futures, timeout)
        try:
            parts = [await futures[0]] if len(futures) == 1 else [await f for f in futures]
        except BaseException:
            # Its caller has gone, its deadline passed, or one piece failed: what is still
            # queued of it is never computed.
            for future in futures:
                future.cancel()
            self._forget_abandoned()
            raise
        finally:
            expiry.cancel()
        self._policy.on_request_done(self._clock.now() - now)
        return _join(parts)

    def check_admission(self, timeout_s: float | None) -> None:
        """Raise ``Overloaded`` if the work queued ahead already runs past what a request with
        this deadline may wait, whatever its own size: the caller can refuse it before reading
        its body."""
        self._admit(0, timeout_s if timeout_s is not None else self._config.default_timeout_s)

    def _admit(self, rows: int, timeout: float) -> None:
        """Shed at once a request that would wait past its deadline.

        Under overload a FIFO queue makes every request late; refusing, up front, the ones the
        replicas cannot reach in time keeps the rest on time (goodput holds at capacity), and
        the refused ones learn it now rather than at their deadline.
        """
        speed = self._rows_per_s * max(1, self._capacity.slots)
        if speed <= 0.0 or not len(self._queue):
            return
        wait = (self._queue.rows + rows) / speed
        # A quarter of the deadline is left for the estimate's error and the request's own
        # compute: a request admitted only to time out would waste a replica's time.
        if wait > _ADMIT_SHARE * timeout:
            raise Overloaded(
                f"model {self.name!r}: {self._queue.rows} rows are queued ahead, about "
                f"{wait * 1e3:.0f} ms of work, past this request's deadline of "
                f"{timeout * 1e3:.0f} ms; retry later",
                retry_after=max(1.0, wait),
            )

    def _can_go_now(self, entries: list[Entry], now: float) -> bool:
        if len(entries) != 1 or len(self._queue) or self._loop_task is None:
            return False
        if self._policy.wait_before_dispatch(entries[0].rows, now, now) > 0:
            return False
        return self._capacity.try_acquire()

    def _entries(
        self, inputs: Tensors, rows: int, nbytes: int, now: float, deadline: float, priority: int
    ) -> list[Entry]:
        loop = asyncio.get_running_loop()
        batched = self._config.batched
        if not batched or (
            rows <= self._policy.max_rows() and nbytes <= self._config.max_batch_bytes
        ):
            key = self._key(inputs) if batched else None
            ticket = _Ticket(inputs, loop.create_future())
            return [Entry(rows, nbytes, key, now, deadline, priority, ticket)]
        limit = self._piece_rows(rows, nbytes)
        ranges = split_rows(rows, limit) if rows > limit else [(0, rows)]
        entries = []
        for start, stop in ranges:
            piece = inputs if len(ranges) == 1 else {k: v[start:stop] for k, v in inputs.items()}
            ticket = _Ticket(piece, loop.create_future())
            key = self._key(piece) if batched else None
            size = nbytes * (stop - start) // max(rows, 1)
            entries.append(Entry(stop - start, size, key, now, deadline, priority, ticket))
        return entries

    def _key(self, inputs: Tensors) -> Hashable:
        padding = self._config.padding
        return pad_key(inputs, padding.inputs) if padding else stack_key(inputs)

    def _piece_rows(self, rows: int, nbytes: int) -> int:
        by_bytes = self._config.max_batch_bytes * max(rows, 1) // max(nbytes, 1)
        return max(1, min(self._policy.max_rows(), by_bytes))

    # --- the loop -------------------------------------------------------------------------

    async def _form_batches(self) -> None:
        while True:
            await self._wait_for_requests()
            # Before waiting for a free replica: a full batch may go to a busy one (a nudge
            # from ``submit`` finds no waiter while the loop is on its way here).
            self._send_ahead()
            if not len(self._queue):
                continue
            if not await self._capacity.acquire(timeout=_IDLE_POLL_S):
                self._send_ahead()
                continue
            free_since = self._clock.now()
            try:
                await self._wait_for_fill(free_since)
                self._dispatch(free_since)
            except BaseException:
                self._capacity.release()
                raise

    def _full_batch_queued(self) -> bool:
        return self._config.send_ahead and self._queue.rows >= self._policy.max_rows()

    def _send_ahead(self) -> None:
        # Only full batches: a partial one sent ahead would leave without the rows that arrive
        # while it waits, and the replica gains nothing from it before it is free anyway.
        max_rows = self._policy.max_rows()
        while self._full_batch_queued() and self._capacity.room_ahead:
            batch = self._queue.peek(max_rows, self._config.max_batch_bytes)
            if sum(e.rows for e in batch) < max_rows or not self._in_time_ahead(batch):
                return
            self._capacity.try_acquire_ahead()
            self._queue.remove(batch)
            task = self._start(batch)
            self._ahead[task] = batch
            task.add_done_callback(self._ahead_done)

    def _ahead_done(self, task: asyncio.Task[None]) -> None:
        self._ahead.pop(task, None)

    def _in_time_ahead(self, batch: list[Entry]) -> bool:
        # A batch at the replica is computed even if its deadline passes while it waits there:
        # send one only if it should finish in time behind the batch computing now.
        if self._rows_per_s <= 0.0:
            return False  # no speed measured yet
        batch_s = self._policy.max_rows() / self._rows_per_s
        left = min(e.deadline for e in batch) - self._clock.now()
        return _ADMIT_SHARE * left > 2 * batch_s

    def _start(self, batch: list[Entry]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._compute(batch))
        self._running.add(task)
        # A callback, not a ``finally`` in the task: a task cancelled before its first step
        # never runs its body, and its room would never be given back.
        task.add_done_callback(self._batch_done)
        return task

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._give_back()

    def _give_back(self) -> None:
        # A batch's room goes back, and the loop may form the next one.
        self._capacity.release()
        self._wake()

    async def _wait_for_requests(self) -> None:
        while not len(self._queue):
            await self._sleep(_IDLE_POLL_S)

    async def _wait_for_fill(self, free_since: float) -> None:
        while len(self._queue):
            oldest = self._queue.oldest_arrival()
            now = self._clock.now()
            wait = self._policy.wait_before_dispatch(self._queue.rows, oldest, now, free_since)
            if wait <= 0.0:
                return
            await self._sleep(wait)

    async def _sleep(self, timeout: float) -> None:
        """Wait until a request arrives, a batch finishes, or ``timeout`` passes.

        A bare future resolved by ``_wake`` or a timer: cheaper than ``asyncio.wait`` on the
        hot path, and unlike ``wait_for`` on Python 3.11 it never swallows a cancellation
        (``close()`` relies on cancelling this loop).
        """
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _expire(self, futures: list[asyncio.Future[Any]], timeout: float) -> None:
        error = RequestTimeout(
            f"model {self.name!r}: no answer within the request's deadline of "
            f"{timeout * 1e3:.0f} ms; it was not computed unless it had already started"
        )
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._forget_abandoned()

    def _forget_abandoned(self) -> None:
        # Called when a request is given up, not per batch: a scan of the queue per batch cost
        # O(queue) under overload, when the queue is longest.
        self._queue.remove_if(lambda e: e.ticket.future.done())
        for task, batch in list(self._ahead.items()):
            if all(e.ticket.future.done() for e in batch):
                task.cancel()  # the replica skips it if it has not started it

    def _dispatch(self, free_since: float) -> None:
        # A method of its own so that no local in the long-lived loop keeps the last batch
        # (its inputs and outputs) alive while the model sits idle.
        rows = self._policy.take_rows(
            self._queue.rows, self._queue.oldest_arrival(), self._clock.now(), free_since
        )
        batch = self._queue.take(rows if self._config.batched else 1, self._config.max_batch_bytes)
        if not batch:
            self._capacity.release()
            return
        self._start(batch)

    async def _run(self, batch: list[Entry]) -> None:
        # Inline, in the request's own task (``submit`` when the model is idle).
        try:
            await self._compute(batch)
        finally:
            self._give_back()

    async def _compute(self, batch: list[Entry]) -> None:
        started = self._clock.now()
        try:
            inputs, original = self._stack(batch)
            result = await self._run_batch(inputs)
            now = self._clock.now()
            if isinstance(result, Computed):
                outputs, compute_s = result.outputs, result.busy_s
                started = now - compute_s  # a wait at the replica is queueing, not compute
            else:
                outputs, compute_s = result, now - started
            rows = sum(e.rows for e in batch)
            self._policy.on_batch_done(rows, compute_s)
            if compute_s > 0:
                speed = rows / compute_s
                self._rows_per_s = (
                    speed if not self._rows_per_s else 0.8 * self._rows_per_s + 0.2 * speed
                )
            if self._observer is not None:
                self._observer.observe_batch(rows, self._policy.max_rows(), compute_s)
            self._fan_out(batch, outputs, original, (started, compute_s))
        except InferdError as e:
            retry = self._config.idempotent and isinstance(e, ModelError | ReplicaUnavailable)
            if len(batch) > 1 and retry:
                # One bad request (one that raises, or crashes its replica) must not fail its
                # batch-mates: retry each alone.
                await asyncio.gather(*(self._compute([entry]) for entry in batch))
                return
            _fail(batch, e)
        except Exception as e:  # the run_batch transport itself broke
            logger.exception("model %r: batch failed", self.name)
            _fail(batch, ModelError(f"model {self.name!r} failed: {type(e).__name__}: {e}"))

    def _stack(self, batch: list[Entry]) -> tuple[Tensors, list[dict[str, tuple[int, ...]]]]:
        padding = self._config.padding
        if padding is None:
            return concatenate(batch), []
        requests = [e.ticket.inputs for e in batch]
        return pad_and_stack(requests, padding.inputs, padding.value)

    def _fan_out(
        self,
        batch: list[Entry],
        outputs: Tensors,
        original: list[dict[str, tuple[int, ...]]],
        timing: tuple[float, float],
    ) -> None:
        started, compute_s = timing
        if not self._config.batched:
            entry = batch[0]
            _settle(entry.ticket.future, (outputs, started - entry.arrival, compute_s, 1))
            return
        total = sum(e.rows for e in batch)
        check_rows(self.name, outputs, total)
        for entry, part in zip(batch, self._split(batch, outputs, original), strict=True):
            _settle(entry.ticket.future, (part, started - entry.arrival, compute_s, total))

    def _split(
        self, batch: list[Entry], outputs: Tensors, original: list[dict[str, tuple[int, ...]]]
    ) -> list[Tensors]:
        rows = [e.rows for e in batch]
        padding = self._config.padding
        if padding is not None:
            return unpad(outputs, rows, original, padding.outputs, padding.follows)
        parts, start = [], 0
        for count in rows:
            parts.append({k: v[start : start + count] for k, v in outputs.items()})
            start += count
        return parts


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _join(parts: list[tuple[Tensors, float, float, int]]) -> Answer:
    if len(parts) == 1:
        outputs, queue_s, compute_s, batch_rows = parts[0]
        return Answer(outputs, queue_s, compute_s, batch_rows)
    joined = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return Answer(
        joined,
        queue_s=max(p[1] for p in parts),
        compute_s=sum(p[2] for p in parts),
        batch_rows=sum(p[3] for p in parts),
    )


def _settle(
    future: asyncio.Future[tuple[Tensors, float, float, int]],
    result: tuple[Tensors, float, float, int] | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


def _fail(batch: list[Entry], error: BaseException) -> None:
    for entry in batch:
        _settle(entry.ticket.future, error=error)
