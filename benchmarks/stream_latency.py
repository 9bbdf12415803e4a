"""Issue 5's figure: latency per message over one WebSocket at a steady rate.

    .venv/bin/python -m benchmarks.stream_latency [--rate 1000] [--seconds 5] [--rounds 3]

The demo's echo (FP32 [1, 16] in, the same out) behind ``/v2/models/echo/stream``. One socket
carries ``--rate`` messages per second on a fixed schedule (open loop) while a reader takes
the answers; a message's latency is from just before its send to its answer's arrival. Then
the same socket saturated (64 messages in flight) gives messages per second.

References measured in the same run: the echo model's own ``predict`` in-process (the figure
is the median's distance from it), and a plain WebSocket echo server (uvicorn, no decoding,
no model) for what the transport alone costs. The WebSocket implementations uvicorn offers are
compared on inferd itself: websockets (sans-I/O; what ``inferd serve`` picks) and wsproto, plus
websockets with permessage-deflate, which browsers offer and uvicorn accepts. The servers stay
up for the whole run, pinned to core 1 (this client to core 0); each round measures every case,
in a rotating order, and a case's figures are its medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.harness import CLIENT_CORE, Server, cpu_seconds, free_port, save
from benchmarks.serving_overhead import model_time_ms
from inferd.demo import demo_repository

MESSAGE = (
    '{"id":"%d","inputs":[{"name":"input","shape":[1,16],"datatype":"FP32",'
    '"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
)
WINDOW = 64


@dataclass
class StreamResult:
    """One server's figures: latency at the steady rate, messages/s saturated."""

    messages: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    saturated_per_s: float
    server_cpu_us: float
    """The server process's CPU time per message while saturated (less noisy than wall time)."""


async def steady(ws: ClientConnection, rate: float, seconds: float) -> list[float]:
    """Latencies (s) of ``rate * seconds`` messages sent on a fixed schedule."""
    count = int(rate * seconds)
    sent_at = [0.0] * count
    latencies = [0.0] * count

    async def read() -> None:
        for _ in range(count):
            answer = orjson.loads(await ws.recv())
            i = int(answer["id"])
            latencies[i] = time.perf_counter() - sent_at[i]

    reader = asyncio.create_task(read())
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[i] = time.perf_counter()
        await ws.send(MESSAGE % i)
    await asyncio.wait_for(reader, 60)
    return latencies


async def saturated(ws: ClientConnection, seconds: float, pid: int) -> tuple[float, float]:
    """Messages per second with ``WINDOW`` messages in flight, and the server's CPU µs each."""
    room = asyncio.Semaphore(WINDOW)
    answered = 0

    async def read(total: int) -> None:
        nonlocal answered
        while answered < total:
            await ws.recv()
            answered += 1
            room.release()

    cpu_before = cpu_seconds(pid)
    start = time.perf_counter()
    sent = 0
    reader = asyncio.create_task(read(sys.maxsize))
    while time.perf_counter() - start < seconds:
        await room.acquire()
        await ws.send(MESSAGE % sent)
        sent += 1
    async with asyncio.timeout(60):
        while answered < sent:
            await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu_before
    reader.cancel()
    return sent / elapsed, cpu / sent * 1e6


async def measure(url: str, pid: int, rate: float, seconds: float, deflate: bool) -> StreamResult:
    compression = "deflate" if deflate else None
    async with connect(url, compression=compression, max_queue=None) as ws:
        await steady(ws, rate, 1.0)  # warm-up
        latencies = sorted(await steady(ws, rate, seconds))
        per_s, cpu_us = await saturated(ws, seconds, pid)
    q = statistics.quantiles(latencies, n=100)
    return StreamResult(len(latencies), statistics.median(latencies) * 1e3, q[98] * 1e3,
                        latencies[-1] * 1e3, per_s, cpu_us)  # fmt: skip


# --- servers --------------------------------------------------------------------------------


def start_inferd(echo: Path, ws_impl: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.stream_latency", "--serve-inferd", ws_impl,
            "--port", str(port), "--model", str(echo)]  # fmt: skip
    return Server(f"inferd ({ws_impl})", argv, port, "/v2/health/ready")


def start_plain() -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.stream_latency", "--serve-plain", "--port",
            str(port)]  # fmt: skip
    return Server("plain", argv, port, "/")


def serve_inferd(echo: Path, ws_impl: str, port: int) -> None:
    """``inferd serve`` of the demo's echo, with the WebSocket implementation chosen."""
    import uvicorn

    from inferd.config import ServerConfig
    from inferd.server.serve import build_app

    config = ServerConfig(port=port, log_level="warning")
    app = build_app([echo], config)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws=ws_impl,
                lifespan="on", log_level="warning", access_log=False)  # fmt: skip


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes each message back untouched; answers HTTP with 200 (the readiness probe)."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


def serve_plain(port: int) -> None:
    import uvicorn

    uvicorn.run(plain_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                ws="websockets-sansio", lifespan="off", log_level="warning")  # fmt: skip


# --- the run --------------------------------------------------------------------------------


def run(rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    """Every case once per round, in a rotating order, the servers up all along: the machine's
    noise then falls on every case alike. A case's figure is its median over the rounds."""
    echo = demo_repository() / "echo"
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    results: dict[str, Any] = {"rate_per_s": rate, "rounds": rounds,
                               "model_time_ms": model_time_ms()}  # fmt: skip
    servers = {"plain": start_plain()}
    try:
        servers["websockets"] = start_inferd(echo, "websockets-sansio")
        servers["wsproto"] = start_inferd(echo, "wsproto")
        per_case = _rounds(servers, rate, seconds, rounds)
    finally:
        for server in servers.values():
            server.stop()
    results["cases"] = {name: _median(runs) for name, runs in per_case.items()}
    results["runs"] = per_case
    return results


def _rounds(
    servers: dict[str, Server], rate: float, seconds: float, rounds: int
) -> dict[str, list[StreamResult]]:
    stream = "/v2/models/echo/stream"
    cases = [(name, servers[key], path.replace("{stream}", stream), deflate)
             for name, key, path, deflate in CASES]  # fmt: skip
    per_case: dict[str, list[StreamResult]] = {name: [] for name, *_ in cases}
    for k in range(rounds):
        for name, server, path, deflate in cases[k % len(cases) :] + cases[: k % len(cases)]:
            url = f"ws://127.0.0.1:{server.port}{path}"
            result = asyncio.run(measure(url, server.proc.pid, rate, seconds, deflate))
            per_case[name].append(result)
            print(f"round {k + 1}, {name}: p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms, "
                  f"{result.saturated_per_s:,.0f} msg/s, {result.server_cpu_us:.0f} µs CPU/msg",
                  flush=True)  # fmt: skip
    return per_case


CASES = [
    ("plain websocket echo", "plain", "/", False),
    ("inferd, websockets", "websockets", "{stream}", False),
    ("inferd, wsproto", "wsproto", "{stream}", False),
    ("inferd, websockets + deflate", "websockets", "{stream}", True),
]
"""(name, server, path, whether the client offers permessage-deflate)."""


def _median(runs: list[StreamResult]) -> StreamResult:
    def mid(field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    return StreamResult(runs[0].messages, mid("p50_ms"), mid("p99_ms"), mid("max_ms"),
                        mid("saturated_per_s"), mid("server_cpu_us"))  # fmt: skip


def report(results: dict[str, Any]) -> None:
    own = results["model_time_ms"]
    rate = results["rate_per_s"]
    cases: dict[str, StreamResult] = results["cases"]
    print(f"echo model's own time: {own * 1e3:.1f} us (median, in-process)")
    print(f"medians of {results['rounds']} rounds:")
    print(f"| server | p50 ms at {rate:,.0f}/s | p99 ms | p50 - model ms | saturated msg/s "
          "| server CPU µs/msg |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in cases.items():
        print(f"| {name} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.p50_ms - own:.3f} | "
              f"{r.saturated_per_s:,.0f} | {r.server_cpu_us:.0f} |")  # fmt: skip
    inferd, plain = cases["inferd, websockets"], cases["plain websocket echo"]
    wsproto = cases["inferd, wsproto"]
    print(f"inferd p50 - model's own time: {inferd.p50_ms - own:.3f} ms (target: under 2 ms)")
    print(f"inferd / plain echo, saturated: {inferd.saturated_per_s / plain.saturated_per_s:.2f}x")
    print(f"server CPU per message, wsproto / websockets: "
          f"{wsproto.server_cpu_us / inferd.server_cpu_us:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each case")
    parser.add_argument("--serve-inferd", metavar="WS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_inferd:
        serve_inferd(args.model, args.serve_inferd, args.port)
    elif args.serve_plain:
        serve_plain(args.port)
    else:
        results = run(args.rate, args.seconds, args.rounds)
        report(results)
        print("saved", save("stream_latency", results))


if __name__ == "__main__":
    main()
