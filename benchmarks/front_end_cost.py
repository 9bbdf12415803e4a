"""The front end's CPU per request, without HTTP or a load generator: the ASGI app called directly.

    .venv/bin/python -m benchmarks.front_end_cost [--profile]

Echo model (in a thread), FP32 [1, 16] as JSON. Prints microseconds per request one at a time
and with 64 in flight; ``--profile`` adds cProfile's top functions. No reference in this one:
compare commits (git worktree) on the same machine, back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

import uvloop

from inferd.config import ServerConfig
from inferd.demo import demo_repository
from inferd.replicas.manager import ModelManager
from inferd.repository import discover
from inferd.server.app import InferdApp

BODY = (
    b'{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32",'
    b'"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
)


async def one(app: InferdApp, never: asyncio.Future[None]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/v2/models/echo/infer",
             "headers": [(b"content-length", str(len(BODY)).encode())]}  # fmt: skip
    sent: list[Any] = []
    calls = [0]

    async def receive() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            return {"type": "http.request", "body": BODY, "more_body": False}
        await never  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent


async def main(profile: bool, n: int = 3000) -> None:
    app = InferdApp(ModelManager(discover([demo_repository() / "echo"])), ServerConfig())
    await app.manager.load()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for _ in range(200):
        await one(app, never)
    start = time.perf_counter()
    for _ in range(n):
        await one(app, never)
    print(f"one at a time: {(time.perf_counter() - start) / n * 1e6:.1f} µs per request")
    start = time.perf_counter()
    for _ in range(n // 64):
        await asyncio.gather(*(one(app, never) for _ in range(64)))
    print(
        f"64 in flight:  {(time.perf_counter() - start) / (n // 64 * 64) * 1e6:.1f} µs per request"
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n // 64):
            await asyncio.gather(*(one(app, never) for _ in range(64)))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await app.manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", action="store_true")
    uvloop.run(main(parser.parse_args().profile))
