"""AsyncLLMEngine: ``LLMEngine.step()`` in a background thread, one async stream per request.

The model never runs on the event loop. Requests and aborts cross into the engine thread
through a thread-safe command queue, drained at the start of each iteration; tokens cross back
once per step and event loop through ``call_soon_threadsafe`` into each request's own bounded
``asyncio.Queue``. The engine thread owns the ``LLMEngine`` outright, so nothing in it is
locked; other threads read only the ``EngineStats`` snapshot it publishes after each step.

The engine thread also builds the engine (loads, compiles, warms up). On CPU, torch's
OpenMP keeps a pool of worker threads for each thread that ran parallel work, for as long as
that thread lives; once a process holds more such workers than it has CPUs, libgomp's
workers stop spinning between parallel regions and sleep, and every region then waits for
them to wake. Loading on another long-lived thread (an executor's) left a second pool
behind, and the engine's second core idled a quarter of each step (BENCHMARKS.md, issue 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass

from inferd.errors import InferdError, InvalidRequest, ModelError, ModelNotReady, ReplicaUnavailable
from inferd.llm.engine import EngineConfig, EngineStats, LLMEngine
from inferd.llm.sampling import Sampler, SamplingParams
from inferd.llm.scheduler import StepOutput

logger = logging.getLogger(__name__)

_ABORTED = object()
"""Ends a stream whose request was aborted: no final token follows."""

_Item = StepOutput | InferdError | object


@dataclass(frozen=True, slots=True, eq=False)
class _Sink:
    """Where one request's outputs go: a queue living on the event loop that awaits it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item]


@dataclass(frozen=True, slots=True)
class _Add:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    sink: _Sink


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


class AsyncLLMEngine:
    """Serves ``LLMEngine`` to asyncio code: ``async for out in engine.stream(...)``."""

    def __init__(self, build: Callable[[], LLMEngine], idle_wait_s: float = 0.5) -> None:
        """Start the engine thread, which calls ``build`` and then serves; return once the
        engine is built, raising what ``build`` raised."""
        self.idle_wait_s = idle_wait_s
        """Longest sleep of an idle engine thread between checks of its stop flag."""
        self._commands: queue.SimpleQueue[_Add | _Abort] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # orders submissions against close()
        self._closed = False
        self._sinks: dict[str, _Sink] = {}  # engine thread only
        self.engine: LLMEngine  # set on the engine thread by ``build``
        self._stats: EngineStats
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(build,), name="inferd-llm-engine", daemon=True
        )
        self._thread.start()
        # Loading and compiling take from seconds to minutes: no deadline here, but the thread
        # sets the event whatever happens, and a thread that died is noticed within a second.
        while not self._built.wait(1.0):
            if not self._thread.is_alive():
                break
        if self._build_error is not None:
            raise self._build_error
        if not self._built.is_set():
            raise ModelError("the LLM engine thread ended before the engine was built")

    @classmethod
    def from_config(
        cls, config: EngineConfig, sampler: Sampler | None = None, idle_wait_s: float = 0.5
    ) -> AsyncLLMEngine:
        """Build the ``LLMEngine`` (loading the model) on its own thread, and serve from there."""
        return cls(lambda: LLMEngine.from_config(config, sampler), idle_wait_s)

    @property
    def stats(self) -> EngineStats:
        """The engine's gauges and counters after its latest iteration."""
        return self._stats

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive()

    async def stream(
        self, request_id: str, prompt_token_ids: SequenceOf[int], params: SamplingParams
    ) -> AsyncIterator[StepOutput]:
        """The request's new tokens as they are sampled; closing the iterator early aborts it.

        Errors come out of the iterator: ``InvalidRequest`` for a request the engine refuses,
        ``ModelError`` if a step fails, ``ReplicaUnavailable`` if the engine closes first.
        """
        # One slot per token plus one for an ending error or abort: the engine never blocks.
        sink = _Sink(asyncio.get_running_loop(), asyncio.Queue(maxsize=params.max_tokens + 1))
        self._submit(_Add(request_id, tuple(prompt_token_ids), params, sink))
        done = False
        try:
            while not done:
                item = await sink.queue.get()
                if isinstance(item, InferdError):
                    done = True  # the engine has already dropped the request
                    raise item
                if not isinstance(item, StepOutput):
                    done = True  # aborted, and already dropped
                    return
                done = item.finished
                yield item
        finally:
            if not done:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread; its stream ends without a final token."""
        with contextlib.suppress(ModelNotReady):  # closing already ends every request
            self._submit(_Abort(request_id))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread, ending every open stream with ``ReplicaUnavailable``."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the LLM engine thread did not stop within %.1f s", timeout)

    def _submit(self, command: _Add | _Abort) -> None:
        with self._lock:
            if self._closed:
                raise ModelNotReady("the LLM engine is closed")
            self._commands.put(command)
        self._wake.set()

    # --- the engine thread ------------------------------------------------------------------

    def _run(self, build: Callable[[], LLMEngine]) -> None:
        try:
            self.engine = build()
            self._stats = self.engine.stats()
        except BaseException as exc:  # handed to the constructor, which raises it
            self._build_error = exc
            with self._lock:
                self._closed = True
            return
        finally:
            self._built.set()
        self._serve()

    def _serve(self) -> None:
        try:
            while not self._closed:
                if not self.engine.has_unfinished():
                    self._wake.wait(self.idle_wait_s)
                    self._wake.clear()  # before draining: a later submit sets it again
                self._drain_commands()
                if self.engine.has_unfinished():
                    self._step()
                self._stats = self.engine.stats()
        finally:
            with self._lock:
                self._closed = True  # also when this thread dies of a bug: fail fast, not hang
            self._drain_commands()  # adds that raced close() get the error below
            self._fail_all(ReplicaUnavailable("the LLM engine closed"))

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, _Add):
                self._add(command)
            else:
                self._abort(command.request_id)

    def _add(self, command: _Add) -> None:
        try:
            if command.request_id in self._sinks:
                raise InvalidRequest(f"request id {command.request_id!r} is already in use")
            self.engine.add_request(command.request_id, command.prompt_token_ids, command.params)
        except InvalidRequest as exc:
            _deliver({command.sink: [exc]})
            return
        self._sinks[command.request_id] = command.sink

    def _abort(self, request_id: str) -> None:
        self.engine.abort(request_id)
        sink = self._sinks.pop(request_id, None)
        if sink is not None:
            _deliver({sink: [_ABORTED]})

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            logger.exception("LLM engine step failed; failing its %d requests", len(self._sinks))
            self._fail_all(ModelError(f"LLM engine step failed: {exc!r}"))
            return
        batches: dict[_Sink, list[_Item]] = defaultdict(list)
        for output in outputs:
            sink = self._sinks.get(output.request_id)
            if sink is not None:
                batches[sink].append(output)
            if output.finished:
                self._sinks.pop(output.request_id, None)
        _deliver(batches)

    def _fail_all(self, error: InferdError) -> None:
        sinks, self._sinks = self._sinks, {}
        for request_id in sinks:
            self.engine.abort(request_id)
        # An exception instance apiece: each stream raises it and writes its own traceback.
        _deliver({sink: [type(error)(error.message)] for sink in sinks.values()})


def _deliver(batches: dict[_Sink, list[_Item]]) -> None:
    """Hand items to their queues: one thread-safe call per event loop, not per token."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sink, list[_Item]]]] = defaultdict(list)
    for sink, items in batches.items():
        by_loop[sink.loop].append((sink, items))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, pairs)
        except RuntimeError:
            logger.debug("dropping outputs for a closed event loop")


def _put_all(pairs: list[tuple[_Sink, list[_Item]]]) -> None:
    for sink, items in pairs:
        for item in items:
            sink.queue.put_nowait(item)
