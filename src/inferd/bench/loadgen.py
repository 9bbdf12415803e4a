"""The load of one generator process, on one event loop: closed loop or open loop.

Closed loop: ``concurrency`` clients, each with its own kept-alive connection, send the next
request as soon as the previous one is answered; latency runs from the send.

Open loop: requests leave at precomputed Poisson times whatever the server does, on a pool of
kept-alive connections; latency runs from the *scheduled* time, so a server (or a generator)
that falls behind is billed for it (no coordinated omission). At most ``max_outstanding``
requests are in flight: an arrival past the bound is not sent and counts as the error
"client overloaded".

A request belongs to the warm-up or to the measured window by the time it was sent (or
scheduled); every measured request is waited for, each for at most ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from inferd.bench.connection import Connection, Endpoint, Response, StaleConnection
from inferd.bench.llm_stream import SseTracker
from inferd.bench.protocols import Payload, check_kserve
from inferd.bench.samples import Samples
from inferd.bench.schedule import arrival_times


@dataclass(frozen=True)
class WorkerPlan:
    """One process's share of the load; ``start_at`` is a ``time.monotonic`` instant."""

    endpoint: Endpoint
    concurrency: int | None
    rate: float | None
    rate_end: float | None
    num_requests: int | None
    warmup_s: float
    duration_s: float
    timeout_s: float
    max_outstanding: int
    seed: int


def runqueue_wait_s() -> float | None:
    """Seconds this thread has spent ready to run but waiting for a CPU (Linux; else None).

    A generator starved by other processes shows little CPU use and yet sends late and reads
    late: this is how the report tells that apart from an idle generator.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class LoadGenerator:
    """Runs one plan against the server and records ``Samples``."""

    def __init__(self, plan: WorkerPlan, payload: Payload) -> None:
        self.plan = plan
        self.payload = payload
        self.samples = Samples()
        self._remaining = plan.num_requests
        self._measure_at = 0.0
        self._stop_at = 0.0
        self._cpu_at_start: float | None = None
        self._wait_at_start: float | None = None
        self._idle: list[Connection] = []
        self._connections: set[Connection] = set()
        self._outstanding = 0

    async def run(self, start_at: float) -> Samples:
        """Wait for ``start_at``, run warm-up and measured window, return what was measured."""
        # Event-loop timers may fire a little early: sleep until the instant has truly come.
        while (delay := start_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        self._measure_at = start_at + self.plan.warmup_s
        self._stop_at = self._measure_at + self.plan.duration_s
        self.samples.window_start = self._measure_at
        cpu_timer = asyncio.get_running_loop().call_at(
            self._loop_time(self._measure_at), self._start_cpu_clock
        )
        watchdog = asyncio.create_task(self._watch_deadlines())
        try:
            if self.plan.rate is None:
                await self._closed_loop()
            else:
                await self._open_loop()
        finally:
            cpu_timer.cancel()
            watchdog.cancel()
            for conn in self._connections:
                conn.close()
        self._finish()
        return self.samples

    async def _watch_deadlines(self) -> None:
        """Fail requests past their deadline: one sweep per tick, not a timer per request."""
        tick = min(0.05, self.plan.timeout_s / 10)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.closed:
                    self._connections.discard(conn)
                else:
                    conn.expire(now)

    def _loop_time(self, monotonic_at: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (monotonic_at - time.monotonic())

    def _start_cpu_clock(self) -> None:
        self._cpu_at_start = time.process_time()
        self._wait_at_start = runqueue_wait_s()

    def _finish(self) -> None:
        now = time.monotonic()
        if self._cpu_at_start is None:  # ended before the window opened
            self._start_cpu_clock()
        assert self._cpu_at_start is not None
        self.samples.window_end = max(self.samples.window_end, min(now, self._stop_at))
        if self.plan.num_requests is not None:
            self.samples.window_end = max(self.samples.window_end, self._measure_at)
        self.samples.wall_s = max(now - self._measure_at, 1e-9)
        self.samples.cpu_s = time.process_time() - self._cpu_at_start
        wait = runqueue_wait_s()
        if wait is not None and self._wait_at_start is not None:
            self.samples.wait_s = wait - self._wait_at_start

    # --- closed loop -------------------------------------------------------------------------

    async def _closed_loop(self) -> None:
        assert self.plan.concurrency is not None
        clients = [self._client(i) for i in range(self.plan.concurrency)]
        await asyncio.gather(*clients)

    async def _client(self, index: int) -> None:
        requests = self.payload.requests
        turn = index
        conn: Connection | None = None
        while (measured := self._next_is_measured()) is not None:
            started = time.monotonic()
            conn = await self._one(conn, requests[turn % len(requests)], started, measured)
            turn += 1
        if conn is not None:
            conn.close()

    def _next_is_measured(self) -> bool | None:
        """Whether the next send is measured; None when the run is over."""
        now = time.monotonic()
        if now < self._measure_at:
            return False
        if self._remaining is None:
            return True if now < self._stop_at else None
        if self._remaining == 0:
            return None
        self._remaining -= 1
        return True

    # --- open loop ---------------------------------------------------------------------------

    async def _open_loop(self) -> None:
        plan = self.plan
        assert plan.rate is not None
        times = arrival_times(
            plan.rate,
            plan.duration_s,
            rate_end=plan.rate_end,
            warmup_s=plan.warmup_s,
            seed=plan.seed,
            limit=plan.num_requests,
        )
        start = self._measure_at - plan.warmup_s
        tasks: set[asyncio.Task[None]] = set()
        for n, offset in enumerate(times):
            at = start + offset
            # sleep(0) when late still yields, so that sent requests make progress.
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            measured = offset >= plan.warmup_s
            self.samples.num_scheduled += measured
            if self._outstanding >= plan.max_outstanding:
                self._record_error(measured, "client overloaded")
                continue
            now = time.monotonic()
            if measured:
                self.samples.send_lag_ms.append((now - at) * 1e3)
            request = self.payload.requests[n % len(self.payload.requests)]
            self._outstanding += 1  # counted now, not when the task first runs
            # From the scheduled time, or from the send if a timer woke the loop early.
            task = asyncio.create_task(self._arrival(request, max(at, now), measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _arrival(self, request: bytes, at: float, measured: bool) -> None:
        try:
            conn = self._idle.pop() if self._idle else None
            conn = await self._one(conn, request, at, measured)
            if conn is not None:
                self._idle.append(conn)
        finally:
            self._outstanding -= 1

    # --- one request -------------------------------------------------------------------------

    async def _one(
        self, conn: Connection | None, request: bytes, started: float, measured: bool
    ) -> Connection | None:
        """Send one request (connecting if needed); returns the connection if still usable."""
        tracker = SseTracker() if self.payload.streaming else None
        deadline = time.monotonic() + self.plan.timeout_s
        kind: str | None = "connect"
        try:
            if conn is None:
                conn = await self._connect(deadline)
            kind = "disconnect"
            conn, response = await self._exchange(conn, request, tracker, deadline)
            if tracker is None:
                kind = check_kserve(response)
            elif response.status != 200:
                kind = f"http {response.status}"
            else:
                kind = tracker.outcome()
        except TimeoutError:
            kind = "timeout"
        except OSError:
            pass  # ``kind`` says how far it got: "connect" or "disconnect"
        except ValueError:
            kind = "bad response"
        self._record(measured, started, kind, tracker)
        if conn is not None and (kind in ("timeout", "connect", "disconnect", "bad response")):
            conn.close()
        return conn if conn is not None and not conn.closed else None

    async def _connect(self, deadline: float) -> Connection:
        opening = Connection.open(self.plan.endpoint)
        conn = await asyncio.wait_for(opening, max(deadline - time.monotonic(), 1e-3))
        self._connections.add(conn)
        return conn

    async def _exchange(
        self, conn: Connection, request: bytes, tracker: SseTracker | None, deadline: float
    ) -> tuple[Connection, Response]:
        try:
            return conn, await conn.exchange(request, tracker, deadline)
        except StaleConnection:
            # The server closed an idle kept-alive connection: send again on a fresh one.
            conn.close()
            conn = await self._connect(deadline)
            return conn, await conn.exchange(request, tracker, deadline)

    def _record(
        self, measured: bool, started: float, kind: str | None, tracker: SseTracker | None
    ) -> None:
        if not measured:
            self.samples.num_warmup += 1
            return
        end = time.monotonic()
        self.samples.window_end = max(self.samples.window_end, end)
        if kind is not None:
            self.samples.errors[kind] += 1
            return
        self.samples.latencies_ms.append((end - started) * 1e3)
        if tracker is not None:
            self._record_stream(started, tracker)

    def _record_stream(self, started: float, tracker: SseTracker) -> None:
        times = tracker.chunk_times
        if times:
            self.samples.ttft_ms.append((times[0] - started) * 1e3)
            self.samples.itl_ms += [(b - a) * 1e3 for a, b in itertools.pairwise(times)]
        self.samples.output_tokens += tracker.output_tokens

    def _record_error(self, measured: bool, kind: str) -> None:
        if measured:
            self.samples.window_end = max(self.samples.window_end, time.monotonic())
            self.samples.errors[kind] += 1
        else:
            self.samples.num_warmup += 1
