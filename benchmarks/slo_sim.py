"""The SLO batching mode against fixed queue delays, in a discrete-event simulation (no sleeps).

    .venv/bin/python -m benchmarks.slo_sim

One replica; Poisson arrivals of one row each from a seeded ``random.Random``; a fake model whose
batch takes ``a + b·rows`` seconds, times a uniform ±10% jitter. The batcher's decisions are
replayed exactly: when the replica is free and rows wait, ask the policy how long to wait; wake
on the next arrival, the end of the running batch, or the end of that wait. Prints a markdown
table per request rate. Arrivals are open-loop, so below capacity every policy's throughput is
the offered rate; amortization shows as the replica's busy fraction (capacity left for more
load). The real-server benchmark comes later.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from inferd.batching.policy import BatchPolicy
from inferd.batching.slo import SloController, SloTarget

TARGET_S = 0.050
MAX_BATCH = 64
RATES = (100.0, 600.0, 1200.0)


class Policy(Protocol):
    """What the batcher asks of a batching mode (``SloController``'s interface)."""

    def on_arrival(self, now: float, rows: int) -> None: ...
    def on_batch_done(self, rows: int, compute_s: float) -> None: ...
    def on_request_done(self, total_s: float) -> None: ...
    def max_rows(self) -> int: ...
    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float
    ) -> float: ...


class FixedDelay:
    """Today's mode, ``BatchPolicy``, behind the ``Policy`` interface (it learns nothing)."""

    def __init__(self, max_batch_size: int, delay_s: float) -> None:
        self._policy = BatchPolicy(max_batch_size, delay_s)

    def on_arrival(self, now: float, rows: int) -> None:
        pass

    def on_batch_done(self, rows: int, compute_s: float) -> None:
        pass

    def on_request_done(self, total_s: float) -> None:
        pass

    def max_rows(self) -> int:
        return self._policy.max_batch_size

    def wait_before_dispatch(self, pending_rows: int, oldest_arrival: float, now: float) -> float:
        return self._policy.wait_before_dispatch(pending_rows, oldest_arrival, now)


@dataclass(frozen=True, slots=True)
class Workload:
    rate: float
    """Arrivals per second (one row each)."""
    a_s: float = 0.005
    b_s: float = 0.0005
    jitter: float = 0.1
    requests: int = 20_000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    p99_s: float
    mean_batch: float
    throughput: float
    """Rows answered per second of simulated time."""
    busy: float
    """Fraction of the time the replica computed."""


def simulate(policy: Policy, load: Workload) -> Outcome:
    """Run ``load.requests`` requests through ``policy`` and one replica."""
    rng = random.Random(load.seed)
    queue: deque[float] = deque()
    running: list[float] = []
    latencies: list[float] = []
    sizes: list[int] = []
    now, busy, compute, left = 0.0, 0.0, 0.0, load.requests
    next_arrival, done_at, wake = rng.expovariate(load.rate), math.inf, math.inf
    while len(latencies) < load.requests:
        now = min(next_arrival, done_at, wake)
        if now == done_at:
            policy.on_batch_done(len(running), compute)
            for arrival in running:
                latencies.append(now - arrival)
                policy.on_request_done(now - arrival)
            running, done_at = [], math.inf
        elif now == next_arrival:
            queue.append(now)
            policy.on_arrival(now, 1)
            left -= 1
            next_arrival = now + rng.expovariate(load.rate) if left else math.inf
        wake = math.inf
        if running or not queue:
            continue
        wait = policy.wait_before_dispatch(len(queue), queue[0], now)
        if now + wait > now:  # a wait too small to move the clock is a dispatch
            wake = now + wait
            continue
        running = [queue.popleft() for _ in range(min(len(queue), policy.max_rows()))]
        compute = (load.a_s + load.b_s * len(running)) * rng.uniform(
            1 - load.jitter, 1 + load.jitter
        )
        done_at, busy = now + compute, busy + compute
        sizes.append(len(running))
    latencies.sort()
    return Outcome(
        p99_s=latencies[math.ceil(0.99 * len(latencies)) - 1],
        mean_batch=sum(sizes) / len(sizes),
        throughput=len(latencies) / now,
        busy=busy / now,
    )


def policies() -> dict[str, Policy]:
    """The three modes compared: no delay, a large fixed delay, and the SLO controller."""
    return {
        "fixed delay 0 ms": FixedDelay(MAX_BATCH, 0.0),
        f"fixed delay {TARGET_S * 1000:.0f} ms": FixedDelay(MAX_BATCH, TARGET_S),
        f"slo p99 <= {TARGET_S * 1000:.0f} ms": SloController(SloTarget(TARGET_S, MAX_BATCH)),
    }


def main() -> None:
    load = Workload(rate=0.0)
    print(
        f"one replica, batch latency {load.a_s * 1e3:g} ms + {load.b_s * 1e3:g} ms/row "
        f"(±{load.jitter:.0%}), Poisson arrivals, {load.requests} requests, target p99 "
        f"{TARGET_S * 1e3:g} ms\n"
    )
    for rate in RATES:
        print(f"### {rate:g} requests/s\n")
        print("| policy | p99 ms | mean batch size | throughput rows/s | replica busy |")
        print("|---|---:|---:|---:|---:|")
        for name, policy in policies().items():
            out = simulate(policy, Workload(rate=rate))
            print(
                f"| {name} | {out.p99_s * 1e3:.1f} | {out.mean_batch:.2f} | "
                f"{out.throughput:.0f} | {out.busy:.0%} |"
            )
        print()


if __name__ == "__main__":
    main()
