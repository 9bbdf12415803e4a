"""Generator processes: the load split into shares, each run on its own event loop.

One process runs in the caller (no start-up cost). Several are started as fresh Python
processes (never forked: the caller may hold threads or a loop); each imports only the bench
package, reports ready, and starts at the same ``time.monotonic`` instant as the others (one
clock for all processes on Linux), so their measured windows line up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection as Pipe
from typing import Any, Final, TypeVar

from inferd.bench.connection import Endpoint
from inferd.bench.loadgen import LoadGenerator, WorkerPlan
from inferd.bench.protocols import Payload
from inferd.bench.samples import Samples
from inferd.bench.spec import BenchSpec
from inferd.errors import InferdError
from inferd.interrupts import raising_keyboard_interrupt

START_DELAY_S: Final = 0.1
"""Between 'everyone is ready' and the common start: time to hand out the start instant."""
READY_TIMEOUT_S: Final = 60.0

T = TypeVar("T")


def plans(spec: BenchSpec) -> list[WorkerPlan]:
    """The spec's load cut into ``spec.processes`` shares (fewer if there is too little)."""
    count = spec.processes
    if spec.num_requests is not None:
        count = min(count, spec.num_requests)
    return [_share(spec, i, count) for i in range(count)]


def _share(spec: BenchSpec, index: int, count: int) -> WorkerPlan:
    def part(total: int) -> int:
        return total // count + (index < total % count)

    def rate(value: float | None) -> float | None:
        return None if value is None else value / count

    return WorkerPlan(
        endpoint=Endpoint.from_url(spec.url),
        concurrency=None if spec.concurrency is None else part(spec.concurrency),
        rate=rate(spec.rate),
        rate_end=rate(spec.rate_end),
        num_requests=None if spec.num_requests is None else part(spec.num_requests),
        warmup_s=spec.warmup_s,
        duration_s=spec.duration_s,
        timeout_s=spec.timeout_s,
        max_outstanding=math.ceil(spec.max_outstanding / count),
        seed=spec.seed * 1000 + index,
    )


def generate(spec: BenchSpec, payload: Payload) -> list[Samples]:
    """Run the load; one ``Samples`` per process."""
    shares = plans(spec)
    if len(shares) == 1:
        generator = LoadGenerator(shares[0], payload)
        return [run_loop(lambda: generator.run(time.monotonic()))]
    return _spawned(spec, shares, payload)


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh event loop (uvloop when installed), in a thread of its own if
    this thread already runs a loop (``run_bench`` is synchronous; its caller may be async)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(main)
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(_run(main))
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, name="inferd-bench")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with _ctrl_c_raises(), asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _ctrl_c_raises() -> contextlib.AbstractContextManager[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` at once while the load runs.

    ``asyncio.Runner`` would turn it into a cancellation of the main task, and Python 3.11's
    ``wait_for`` can lose a cancellation that races its inner future: the load then finished
    as if never interrupted, and ``inferd tune`` went on with its next trial (seen once in CI).
    """
    return raising_keyboard_interrupt(signal.SIGINT, only_over=signal.default_int_handler)


def _spawned(spec: BenchSpec, shares: list[WorkerPlan], payload: Payload) -> list[Samples]:
    workers: list[_Worker] = []
    try:
        for plan in shares:
            workers.append(_Worker(plan, payload))
        for worker in workers:
            worker.receive(READY_TIMEOUT_S, "start")
        start_at = time.monotonic() + START_DELAY_S
        for worker in workers:
            worker.send(start_at)
        budget = spec.warmup_s + spec.duration_s + 2 * spec.timeout_s + READY_TIMEOUT_S
        if spec.num_requests is not None:
            budget += spec.num_requests * spec.timeout_s
        return [worker.receive(budget, "finish") for worker in workers]
    finally:
        for worker in workers:
            worker.stop()


class _Worker:
    """A generator process: ``python -m inferd.bench.worker_process``, spoken to over its
    stdin and stdout with pickled messages. Not ``multiprocessing``'s spawn, which runs the
    caller's main module again in every child: a script without a main guard would start
    its own benchmark in each generator."""

    def __init__(self, plan: WorkerPlan, payload: Payload) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inferd.bench.worker_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._outbox = Pipe(os.dup(self.process.stdin.fileno()), readable=False)
        self._inbox = Pipe(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.send((plan, payload))

    def send(self, message: Any) -> None:
        """Pickle ``message`` to the process."""
        self._outbox.send(message)

    def receive(self, timeout_s: float, what: str) -> Any:
        """The process's next message; ``InferdError`` if none comes within ``timeout_s``."""
        if not self._inbox.poll(timeout_s):
            raise InferdError(f"a bench generator process did not {what} within {timeout_s:.0f} s")
        try:
            message = self._inbox.recv()
        except EOFError:
            raise InferdError(
                f"a bench generator process died before it could {what} (its stderr says why)"
            ) from None
        if isinstance(message, BaseException):
            raise InferdError(f"a bench generator process failed: {message!r}")
        return message

    def stop(self) -> None:
        """Close the pipes and reap the process (killed if it does not end by itself)."""
        self._outbox.close()
        self._inbox.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def worker_main(inbox: Pipe, outbox: Pipe) -> None:
    """A generator process: get its share, report ready, wait for the start instant, run,
    send the samples back."""
    try:
        plan, payload = inbox.recv()
        outbox.send("ready")
        if not inbox.poll(READY_TIMEOUT_S):
            return
        start_at: float = inbox.recv()
        generator = LoadGenerator(plan, payload)
        outbox.send(run_loop(lambda: generator.run(start_at)))
    except EOFError:
        return  # the parent went away
    except Exception as e:
        outbox.send(InferdError(f"{type(e).__name__}: {e}"))  # any exception, sent picklable
