"""Why inferd runs a raw ASGI app on uvicorn (httptools + uvloop) with orjson: the measurement.

    .venv/bin/python -m benchmarks.http_stack

The same echo handler (parse a v2 JSON request, build the array, answer) in three stacks, and the
JSON codec alone (stdlib json vs orjson) on the same request, all in one run.
"""

from __future__ import annotations

import json
import sys
import timeit

import numpy as np
import orjson

from benchmarks.harness import Server, free_port, save, wrk
from benchmarks.serving_overhead import BODY, HEADERS

STACKS = {
    "FastAPI + pydantic (uvicorn)": ["benchmarks.textbook_server:app"],
    "raw ASGI, uvicorn, asyncio loop": ["benchmarks.raw_asgi:app", "--loop", "asyncio"],
    "raw ASGI, uvicorn, httptools + uvloop": ["benchmarks.raw_asgi:app", "--loop", "uvloop",
                                              "--http", "httptools"],
}  # fmt: skip


def codec_us() -> dict[str, float]:
    """Decode + encode of the echo request, microseconds per call."""

    def with_json() -> bytes:
        req = json.loads(BODY)
        x = np.asarray(req["inputs"][0]["data"], dtype=np.float32)
        return json.dumps({"outputs": [{"data": x.tolist()}]}).encode()

    def with_orjson() -> bytes:
        req = orjson.loads(BODY)
        x = np.asarray(req["inputs"][0]["data"], dtype=np.float32)
        return orjson.dumps({"outputs": [{"data": x}]}, option=orjson.OPT_SERIALIZE_NUMPY)

    n = 20000
    return {
        name: min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        for name, fn in (("json (stdlib)", with_json), ("orjson", with_orjson))
    }


def main() -> None:
    results: dict[str, object] = {"codec_us": codec_us()}
    for name, args in STACKS.items():
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", *args, "--port", str(port),
                "--log-level", "warning", "--no-access-log"]  # fmt: skip
        ready = "/health" if "textbook" in args[0] else "/"
        server = Server(name, argv, port, ready, env={"TEXTBOOK_MODEL": "echo"})
        try:
            url = f"{server.url}/v2/models/echo/infer"
            wrk(url, BODY, 8, 2, HEADERS)
            results[name] = {
                "c64": wrk(url, BODY, 64, 6, HEADERS),
                "c1": wrk(url, BODY, 1, 4, HEADERS),
            }
        finally:
            server.stop()
    print("| stack | 64 clients req/s | 1 client p50 ms |")
    print("|---|---|---|")
    for name in STACKS:
        r = results[name]
        print(f"| {name} | {r['c64'].requests_per_s:,.0f} | {r['c1'].p50_ms:.3f} |")  # type: ignore[index]
    for codec, us in results["codec_us"].items():  # type: ignore[attr-defined]
        print(f"codec {codec}: {us:.2f} us per decode+encode")
    print("saved", save("http_stack", results))


if __name__ == "__main__":
    main()
