"""How many copies of a binary tensor inferd makes, measured (issue 2: at most one in, one out).

    .venv/bin/python -m benchmarks.binary_copies

1. In-process, through the real ASGI app: the body arrives in 64 KiB pieces as uvicorn delivers
   it; tracemalloc's peak during the request, divided by the payload size, counts the copies
   (numpy reports its buffers to tracemalloc). An identity model returns its input unchanged.
   Then the same with uvicorn's protocol (inferd's subclass) in front, fed 64 KiB reads:
   httptools' and uvicorn's per-read buffering included.
2. Over HTTP with tritonclient: time per request against payload size, next to a plain memcpy
   of the payload, so that a hidden extra copy would show as a steeper slope.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn
from uvicorn.server import ServerState

from benchmarks.harness import inferd_server, save
from inferd.config import ServerConfig
from inferd.replicas.manager import ModelManager
from inferd.repository import discover
from inferd.server.app import InferdApp
from inferd.server.protocol import HttpToolsCoalescingProtocol
from inferd.server.testing import MemoryTransport

MIB = 1024 * 1024
SIZES_MIB = (1, 4, 16)
CHUNK = 64 * 1024

MODEL = "class Identity:\n    def predict(self, inputs):\n        return {'y': inputs['x']}\n"
TOML = (
    'backend = "python"\nentry_point = "model.py:Identity"\n[batching]\nmax_batch_size = 8\n'
    '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, -1]\n'
    '[[outputs]]\nname = "y"\ndatatype = "FP32"\nshape = [-1, -1]\n'
)


def identity_repo(root: Path) -> Path:
    folder = root / "identity"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL)
    (folder / "model.toml").write_text(TOML)
    return folder


def request_body(mib: int) -> tuple[bytes, int]:
    n = mib * MIB // 4
    header = orjson.dumps({
        "inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                    "parameters": {"binary_data_size": n * 4}}],
        "parameters": {"binary_data_output": True},
    })  # fmt: skip
    payload = np.arange(n, dtype=np.float32).tobytes()
    return header + payload, len(header)


async def peak_bytes(app: InferdApp, body: bytes, header_length: int) -> int:
    """Peak memory allocated while the app handles one request."""
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    # Keep every piece alive: they stand for the socket's data, which is not the app's to count.
    delivered = list(pieces)
    sent: list[Any] = []
    scope = {
        "type": "http", "method": "POST", "path": "/v2/models/identity/infer",
        "headers": [(b"content-length", str(len(body)).encode()),
                    (b"inference-header-content-length", str(header_length).encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.sleep(0.05)  # let the previous request's tasks finish and free their memory
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    await app(scope, receive, send)
    peak = tracemalloc.get_traced_memory()[1] - base
    assert sent[0]["status"] == 200, sent
    assert len(delivered) * CHUNK >= len(body)
    return peak


async def protocol_peak_bytes(app: InferdApp, body: bytes, header_length: int) -> int:
    """Peak memory while uvicorn's protocol (inferd's subclass) parses the request from 64 KiB
    reads and the app answers it: the server's whole path after the socket, httptools and
    uvicorn's own buffering included."""
    head = (
        b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
        % (header_length, len(body))
    )
    raw = head + body
    reads = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]  # as the socket gives them
    config = uvicorn.Config(app, http=HttpToolsCoalescingProtocol, lifespan="off")
    protocol = HttpToolsCoalescingProtocol(config, ServerState(), {})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    await asyncio.sleep(0.05)
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for read in reads:
        protocol.data_received(read)
        await asyncio.sleep(0)
    for _ in range(1000):
        if transport.calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)  # the body's write
    peak = tracemalloc.get_traced_memory()[1] - base
    assert bytes(transport.calls[0][0]).startswith(b"HTTP/1.1 200"), transport.calls[:1]
    return peak


PeakBytes = Callable[[InferdApp, bytes, int], Awaitable[int]]


async def copies_by_size(folder: Path, peak: PeakBytes) -> dict[int, float]:
    """Median peak memory over three requests per payload size, in payloads, one app for all."""
    app = InferdApp(ModelManager(discover([folder])), ServerConfig())
    await app.manager.load()
    copies = {}
    tracemalloc.start()
    for mib in SIZES_MIB:
        body, hl = request_body(mib)
        await peak(app, body, hl)  # warm-up
        copies[mib] = statistics.median([await peak(app, body, hl) for _ in range(3)]) / (mib * MIB)
    tracemalloc.stop()
    await app.manager.close()
    return copies


def over_http(folder: Path, repeats: int = 20) -> dict[int, dict[str, float]]:
    import tritonclient.http as triton

    server = inferd_server([folder])
    out = {}
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}", connection_timeout=60,
                                              network_timeout=60)  # fmt: skip
        for mib in SIZES_MIB:
            x = np.arange(mib * MIB // 4, dtype=np.float32).reshape(1, -1)
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            times, copy_times = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                result = client.infer("identity", [tensor])
                times.append(time.perf_counter() - t)
                t = time.perf_counter()
                bytearray(x.data)  # one memcpy of the payload, for scale
                copy_times.append(time.perf_counter() - t)
            assert np.array_equal(result.as_numpy("y"), x)
            out[mib] = {"request_ms": statistics.median(times) * 1e3,
                        "memcpy_ms": statistics.median(copy_times) * 1e3}  # fmt: skip
        client.close()
    finally:
        server.stop()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = identity_repo(Path(tmp))
        copies = asyncio.run(copies_by_size(folder, peak_bytes))
        whole = asyncio.run(copies_by_size(folder, protocol_peak_bytes))
        http = over_http(folder)
    print("| payload | peak memory in the app / payload | the same through uvicorn's protocol "
          "| request over HTTP, ms | one memcpy, ms |")  # fmt: skip
    print("|---|---|---|---|---|")
    for mib in SIZES_MIB:
        print(f"| {mib} MiB | {copies[mib]:.2f} | {whole[mib]:.2f} | "
              f"{http[mib]['request_ms']:.2f} | {http[mib]['memcpy_ms']:.3f} |")  # fmt: skip
    results = {"copies": copies, "through_protocol": whole, "http": http}
    print("saved", save("binary_copies", results))


if __name__ == "__main__":
    main()
