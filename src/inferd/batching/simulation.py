"""A discrete-event simulation of one replica and a batching policy: no sleeps, no threads.

Arrivals are Poisson, one row each, from a seeded ``random.Random``; a batch of ``r`` rows takes
``(a + b·r)`` seconds times a uniform jitter. The batcher's decisions are replayed exactly: when
the replica is free and rows wait, the policy says how long to wait; the clock jumps to the next
arrival, the end of the running batch, or the end of that wait. Used by the SLO tests and
``benchmarks/slo_sim.py``, and fit for searching batching settings without a server.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from inferd.batching.policy import DispatchPolicy


@dataclass(frozen=True, slots=True)
class Workload:
    """The traffic and the model's cost."""

    rate: float
    """Arrivals per second (one row each)."""
    a_s: float = 0.005
    """Fixed cost of a batch, seconds."""
    b_s: float = 0.0005
    """Cost per row, seconds."""
    jitter: float = 0.1
    requests: int = 20_000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the requests saw and what the replica did."""

    p99_s: float
    mean_batch: float
    throughput: float
    """Rows answered per second of simulated time."""
    busy: float
    """Fraction of the time the replica computed."""


def simulate(policy: DispatchPolicy, load: Workload) -> Outcome:
    """Run ``load.requests`` requests through ``policy`` and one replica."""
    rng = random.Random(load.seed)
    queue: deque[float] = deque()
    running: list[float] = []
    latencies: list[float] = []
    sizes: list[int] = []
    now, busy, compute, left, free_since = 0.0, 0.0, 0.0, load.requests, 0.0
    next_arrival, done_at, wake = rng.expovariate(load.rate), math.inf, math.inf
    while len(latencies) < load.requests:
        now = min(next_arrival, done_at, wake)
        if now == done_at:  # the batch ends: report it and its requests
            policy.on_batch_done(len(running), compute)
            for arrival in running:
                latencies.append(now - arrival)
                policy.on_request_done(now - arrival)
            running, done_at, free_since = [], math.inf, now
        elif now == next_arrival:
            queue.append(now)
            policy.on_arrival(now, 1)
            left -= 1
            next_arrival = now + rng.expovariate(load.rate) if left else math.inf
        wake = math.inf
        if running or not queue:
            continue
        wait = policy.wait_before_dispatch(len(queue), queue[0], now, free_since)
        if now + wait > now:  # a wait too small to move the clock is a dispatch
            wake = now + wait
            continue
        take = policy.take_rows(len(queue), queue[0], now, free_since)
        running = [queue.popleft() for _ in range(min(len(queue), take))]
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
