"""The dynamic batcher: requests in, batches out to a ``run_batch`` coroutine, answers fanned back.

One asyncio task per model forms batches; each batch runs as its own task so that up to
``concurrency`` batches (one per replica) are in flight. The batcher knows nothing of models,
threads or processes: it is handed a coroutine that computes one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

import numpy as np

from inferd.batching.policy import BatchPolicy, split_rows, take_batch
from inferd.clock import Clock, MonotonicClock
from inferd.errors import InferdError, ModelError, Overloaded, PayloadTooLarge

Tensors = dict[str, np.ndarray]
RunBatch = Callable[[Tensors], Awaitable[Tensors]]

logger = logging.getLogger("inferd.batching")

# The loop re-checks its state at least this often even if no event arrives (every wait is bounded).
_IDLE_POLL_S = 1.0


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    rows: int
    key: Hashable
    future: asyncio.Future[Tensors]
    arrival: float


def stack_key(inputs: Tensors) -> Hashable:
    """Requests with equal keys can be concatenated along the batch axis."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


class DynamicBatcher:
    """Groups concurrent requests of one model into batches of at most ``max_batch_size`` rows."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        policy: BatchPolicy,
        concurrency: int = 1,
        max_queue_rows: int = 8192,
        batched: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self._policy = policy
        self._batched = batched
        self._max_queue_rows = max_queue_rows
        self._clock = clock or MonotonicClock()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._waiter: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._queued_rows

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
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._running:
            await asyncio.wait(self._running, timeout=30.0)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Overloaded(f"model {self.name!r} is shutting down"))
        self._queued_rows = 0

    async def submit(self, inputs: Tensors, rows: int) -> Tensors:
        """Queue one request of ``rows`` rows and wait for its outputs.

        A request larger than the batch size is cut into pieces that ride in separate batches,
        and its outputs are put back together in order.
        """
        if rows > self._max_queue_rows:
            # Retrying could never help, so this is the client's error, not overload.
            raise PayloadTooLarge(
                f"request of {rows} rows is larger than model {self.name!r} can ever queue "
                f"({self._max_queue_rows} rows, max_queue_rows); send it in smaller requests"
            )
        limit = self._policy.max_batch_size
        if not self._batched or rows <= limit:
            return await self._enqueue(inputs, rows)
        pieces = [
            self._enqueue({k: v[start:stop] for k, v in inputs.items()}, stop - start)
            for start, stop in split_rows(rows, limit)
        ]
        parts = await asyncio.gather(*pieces)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _enqueue(self, inputs: Tensors, rows: int) -> asyncio.Future[Tensors]:
        if self._queued_rows + rows > self._max_queue_rows:
            raise Overloaded(
                f"model {self.name!r} has {self._queued_rows} rows queued (limit "
                f"{self._max_queue_rows}); retry later",
                retry_after=1.0,
            )
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        key = stack_key(inputs) if self._batched else None
        self._queue.append(_Pending(inputs, rows, key, future, self._clock.now()))
        self._queued_rows += rows
        self._wake()
        return future

    # --- the loop -------------------------------------------------------------------------

    async def _form_batches(self) -> None:
        while True:
            await self._wait_for_requests()
            await self._slots.acquire()
            try:
                await self._wait_for_fill()
                self._dispatch()
            except BaseException:
                self._slots.release()
                raise

    def _dispatch(self) -> None:
        # A method of its own so that no local in the long-lived loop keeps the last batch
        # (its inputs and outputs) alive while the model sits idle.
        batch = self._take()
        if not batch:
            self._slots.release()
            return
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _wait_for_requests(self) -> None:
        while not self._queue:
            await self._sleep(_IDLE_POLL_S)

    async def _wait_for_fill(self) -> None:
        while self._queue:
            oldest = self._queue[0].arrival
            wait = self._policy.wait_before_dispatch(self._queued_rows, oldest, self._clock.now())
            if wait <= 0.0:
                return
            await self._sleep(wait)

    async def _sleep(self, timeout: float) -> None:
        """Wait until a request arrives, a batch finishes, or ``timeout`` passes.

        ``asyncio.wait`` on a bare future, not ``wait_for``: on Python 3.11, ``wait_for`` can
        swallow a cancellation that lands as its inner wait completes, and ``close()`` hangs.
        """
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait((self._waiter,), timeout=timeout)
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _take(self) -> list[_Pending]:
        # Requests whose caller has gone (cancelled future) are dropped, not computed.
        while self._queue and self._queue[0].future.done():
            self._queued_rows -= self._queue.popleft().rows
        if not self._queue:
            return []
        if not self._batched:
            first = self._queue.popleft()
            self._queued_rows -= first.rows
            return [first]
        queued = list(self._queue)
        chosen = take_batch(
            [p.rows for p in queued], [p.key for p in queued], self._policy.max_batch_size
        )
        picked = set(chosen)
        batch = [queued[i] for i in chosen]
        self._queue = deque(p for i, p in enumerate(queued) if i not in picked)
        self._queued_rows -= sum(p.rows for p in batch)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            await self._compute(batch)
        finally:
            self._slots.release()
            self._wake()

    async def _compute(self, batch: list[_Pending]) -> None:
        try:
            outputs = await self._run_batch(_concatenate(batch))
            self._fan_out(batch, outputs)
        except InferdError as e:
            if len(batch) > 1 and isinstance(e, ModelError):
                # One bad request must not fail its batch-mates: retry each alone.
                await asyncio.gather(*(self._compute([p]) for p in batch))
                return
            _fail(batch, e)
        except Exception as e:  # the run_batch transport itself broke
            logger.exception("model %r: batch failed", self.name)
            _fail(batch, ModelError(f"model {self.name!r} failed: {type(e).__name__}: {e}"))

    def _fan_out(self, batch: list[_Pending], outputs: Tensors) -> None:
        if not self._batched:
            _resolve(batch[0].future, outputs)
            return
        total = sum(p.rows for p in batch)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
                raise ModelError(
                    f"model {self.name!r} returned {got} in output {name!r} for a batch of "
                    f"{total} rows; predict must return one row per input row"
                )
        start = 0
        for p in batch:
            _resolve(p.future, {k: v[start : start + p.rows] for k, v in outputs.items()})
            start += p.rows


def _concatenate(batch: list[_Pending]) -> Tensors:
    if len(batch) == 1:
        return batch[0].inputs
    names = batch[0].inputs.keys()
    return {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}


def _resolve(future: asyncio.Future[Tensors], outputs: Tensors) -> None:
    if not future.done():
        future.set_result(outputs)


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)
