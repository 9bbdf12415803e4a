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
    """Send ``body`` to ``url`` at ``rate_per_s`` (Poisson) for ``duration_s``.

    A minimal HTTP/1.1 client on raw asyncio streams with a pool of kept-alive connections:
    an off-the-shelf Python client costs ~0.5 ms of CPU per request and would itself become
    the bottleneck (sending late and billing the server for it) well before the server does.
    """
    host, port, path = _split(url)
    request = _request_bytes(host, port, path, body, headers)
    result = OpenLoopResult()
    rng = random.Random(seed)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    next_at = 0.0
    while next_at < duration_s:
        delay = start + next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        one = _one(host, port, request, idle, deadline_s, hang_after_s, result)
        tasks.append(asyncio.create_task(one))
        result.sent += 1
        next_at += rng.expovariate(rate_per_s)
    await asyncio.gather(*tasks)
    result.duration_s = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    return result


def _split(url: str) -> tuple[str, int, str]:
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port or 80), "/" + path


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(
    host: str,
    port: int,
    request: bytes,
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    deadline_s: float,
    hang_after_s: float,
    result: OpenLoopResult,
) -> None:
    started = time.perf_counter()
    try:
        conn = idle.pop() if idle else await asyncio.open_connection(host, port)
        conn[1].write(request)
        status, retry_after = await asyncio.wait_for(_response(conn[0]), hang_after_s)
    except TimeoutError:
        result.hung += 1
        return
    except (OSError, asyncio.IncompleteReadError, ValueError):
        result.other_errors += 1
        return
    idle.append(conn)
    _record(result, status, retry_after, time.perf_counter() - started, deadline_s)


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    await reader.readexactly(int(fields.get("content-length", "0")))
    return status, "retry-after" in fields


def _record(
    result: OpenLoopResult, status: int, retry_after: bool, elapsed: float, deadline_s: float
) -> None:
    if status == 200:
        result.latencies_ms.append(elapsed * 1e3)
        if elapsed <= deadline_s:
            result.ok_within_deadline += 1
        else:
            result.ok_late += 1
    elif status == 503 and retry_after:
        result.shed_503 += 1
    elif status == 504:
        result.timeout_504 += 1
    else:
        result.other_errors += 1
