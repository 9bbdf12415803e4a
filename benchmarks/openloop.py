"""An open-loop load generator: requests leave at Poisson times whatever the server does.

Closed-loop generators (wrk) slow down with the server and hide overload; this one keeps
sending, so queues grow and what the server does about it shows. Bounded in count and time,
loopback only. Used by ``pool_load`` for the overload and SLO-mode figures.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class OpenLoopResult:
    sent: int = 0
    ok_within_deadline: int = 0
    ok_late: int = 0
    shed_503: int = 0
    timeout_504: int = 0
    other_errors: int = 0
    hung: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def goodput(self) -> float:
        return self.ok_within_deadline / self.duration_s if self.duration_s else 0.0

    @property
    def answered(self) -> int:
        return self.ok_within_deadline + self.ok_late + self.shed_503 + self.timeout_504

    def p(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "sent": self.sent,
            "goodput_per_s": self.goodput,
            "ok_within_deadline": self.ok_within_deadline,
            "ok_late": self.ok_late,
            "shed_503": self.shed_503,
            "timeout_504": self.timeout_504,
            "other_errors": self.other_errors,
            "hung": self.hung,
            "p50_ms": self.p(0.5),
            "p99_ms": self.p(0.99),
            "mean_ms": statistics.fmean(self.latencies_ms) if self.latencies_ms else float("nan"),
        }


async def run_open_loop(  # noqa: PLR0913
    url: str,
    body: bytes,
    headers: dict[str, str],
    rate_per_s: float,
    duration_s: float,
    deadline_s: float,
    seed: int = 0,
    hang_after_s: float = 30.0,
) -> OpenLoopResult:
    """Send ``body`` to ``url`` at ``rate_per_s`` (Poisson) for ``duration_s``."""
    result = OpenLoopResult()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(limits=limits, timeout=hang_after_s) as client:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        next_at = 0.0
        while next_at < duration_s:
            delay = start + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, url, body, headers, deadline_s, result)))
            result.sent += 1
            next_at += rng.expovariate(rate_per_s)
        await asyncio.gather(*tasks)
        result.duration_s = time.perf_counter() - start
    return result


async def _one(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline_s: float,
    result: OpenLoopResult,
) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        result.hung += 1
        return
    except httpx.HTTPError:
        result.other_errors += 1
        return
    elapsed = time.perf_counter() - started
    if response.status_code == 200:
        result.latencies_ms.append(elapsed * 1e3)
        if elapsed <= deadline_s:
            result.ok_within_deadline += 1
        else:
            result.ok_late += 1
    elif response.status_code == 503 and "retry-after" in response.headers:
        result.shed_503 += 1
    elif response.status_code == 504:
        result.timeout_504 += 1
    else:
        result.other_errors += 1
