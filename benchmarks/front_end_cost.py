"""The front end's CPU per request, without HTTP or a load generator: the ASGI app called directly.

    .venv/bin/python -m benchmarks.front_end_cost [--profile] [--model echo|mlp]

Echo model (in a thread), FP32 [1, 16] as JSON; or the MLP (a replica process), [1, 512].
Prints microseconds per request one at a time and with 64 in flight, wall and this process's
CPU (the front end's, without the replica's); ``--profile`` adds cProfile's top functions
(``SORT=cumtime ROWS=60`` to change the view). No reference in this one: compare commits (git
worktree) on the same machine, back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from typing import Any

import uvloop

from inferd.config import ServerConfig
from inferd.demo import demo_repository
from inferd.replicas.manager import ModelManager
from inferd.repository import discover
from inferd.server.app import InferdApp

BODIES = {
    "echo": (
        b'{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32",'
        b'"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
    ),
    "mlp": b'{"inputs":[{"name":"input","shape":[1,512],"datatype":"FP32","data":['
    + b",".join(str(round(0.001 * i - 0.25, 3)).encode() for i in range(512))
    + b"]}]}",
}


async def one(app: InferdApp, never: asyncio.Future[None], model: str = "echo") -> None:
    body = BODIES[model]
    scope = {"type": "http", "method": "POST", "path": f"/v2/models/{model}/infer",
             "headers": [(b"content-length", str(len(body)).encode())]}  # fmt: skip
    sent: list[Any] = []
    calls = [0]

    async def receive() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await never  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent


async def main(profile: bool, model: str, n: int = 3000) -> None:
    app = InferdApp(ModelManager(discover([demo_repository() / model])), ServerConfig())
    await app.manager.load()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for _ in range(200):
        await one(app, never, model)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await one(app, never, model)
    print(
        f"one at a time: {(time.perf_counter() - start) / n * 1e6:.1f} µs per request "
        f"({(time.process_time() - cpu) / n * 1e6:.1f} µs of this process's CPU)"
    )
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n // 64):
        await asyncio.gather(*(one(app, never, model) for _ in range(64)))
    done = n // 64 * 64
    print(
        f"64 in flight:  {(time.perf_counter() - start) / done * 1e6:.1f} µs per request "
        f"({(time.process_time() - cpu) / done * 1e6:.1f} µs of this process's CPU)"
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n // 64):
            await asyncio.gather(*(one(app, never, model) for _ in range(64)))
        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
            int(os.environ.get("ROWS", "25"))
        )
    await app.manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--model", choices=sorted(BODIES), default="echo")
    args = parser.parse_args()
    uvloop.run(main(args.profile, args.model))
