"""The WebSocket stream endpoint end to end: a real server, the real ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.integration.server import ServerProcess
from tests.integration.test_replicas import metric

DOCS = Path(__file__).resolve().parents[2] / "docs" / "streaming.md"

# Batches leave only when full (3 rows): two messages share one only if both are in it.
TRIO_MODEL = "class Trio:\n    def predict(self, inputs):\n        return {'y': inputs['x'] * 2}\n"
TRIO_TOML = """\
backend = "python"
entry_point = "model.py:Trio"
isolation = "thread"
[batching]
max_batch_size = 3
max_queue_delay_ms = 20000.0
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 4]
[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 4]
"""


@pytest.fixture(scope="module")
def server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ws-models")
    trio = root / "trio"
    trio.mkdir()
    (trio / "model.py").write_text(TRIO_MODEL)
    (trio / "model.toml").write_text(textwrap.dedent(TRIO_TOML))
    with ServerProcess([demo_repo / "echo", trio], log_dir=root) as running:
        yield running


def stream_url(server: ServerProcess, model: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/v2/models/{model}/stream{query}"


def echo_request(value: float, rows: int = 1, request_id: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, 16], "data": [value] * 16 * rows}
        ]
    }
    if request_id is not None:
        request["id"] = request_id
    return request


async def answers(ws: ClientConnection, count: int) -> dict[str, dict[str, Any]]:
    """The next ``count`` answers, by id (each id must come once)."""
    found: dict[str, dict[str, Any]] = {}
    for _ in range(count):
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert answer["id"] not in found, f"answered twice: {answer}"
        found[answer["id"]] = answer
    return found


async def test_every_message_is_answered_tagged_with_its_id(server: ServerProcess) -> None:
    async with connect(stream_url(server, "echo"), compression=None) as ws:
        for i in range(300):
            await ws.send(json.dumps(echo_request(i, request_id=f"m{i}")))
        await ws.send(json.dumps(echo_request(7.0)))  # no id: its number on the socket
        got = await answers(ws, 301)
    assert set(got) == {f"m{i}" for i in range(300)} | {"301"}
    for i in range(300):
        (output,) = got[f"m{i}"]["outputs"]
        assert output["name"] == "output" and output["shape"] == [1, 16]
        assert output["data"] == [float(i)] * 16
    assert got["301"]["outputs"][0]["data"] == [7.0] * 16


async def test_a_bad_message_gets_its_own_error_and_the_socket_goes_on(
    server: ServerProcess,
) -> None:
    bad_shape = {"id": "shape", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],
                                            "data": [1, 2, 3]}]}  # fmt: skip
    async with connect(stream_url(server, "echo"), compression=None) as ws:
        await ws.send("{not json")
        await ws.send(json.dumps(bad_shape))
        await ws.send(json.dumps({"id": "binary", **echo_request(1.0), "parameters":
                                  {"binary_data_output": True}}))  # fmt: skip
        await ws.send(orjson.dumps(echo_request(2.0, request_id="good")))  # a binary frame
        got = await answers(ws, 4)
    assert got["1"]["status"] == 400 and "malformed JSON" in got["1"]["error"]
    assert got["shape"]["status"] == 400 and "[1, 3]" in got["shape"]["error"]
    assert "binary outputs are not supported" in got["binary"]["error"]
    assert got["good"]["outputs"][0]["data"] == [2.0] * 16
    assert "error" not in got["good"]


async def test_the_handshake_headers_apply_to_every_message(server: ServerProcess) -> None:
    headers = {"inferd-timeout-ms": "soon"}
    async with connect(stream_url(server, "echo"), additional_headers=headers) as ws:
        await ws.send(json.dumps(echo_request(1.0, request_id="a")))
        await ws.send(json.dumps(echo_request(2.0, request_id="b")))
        got = await answers(ws, 2)
    for answer in got.values():
        assert answer["error"] == "header inferd-timeout-ms must be a number, got 'soon'"


async def test_messages_of_two_sockets_share_a_batch(server: ServerProcess) -> None:
    def trio_request(request_id: str, rows: int) -> str:
        tensor = {"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [1.0] * 4 * rows}
        return json.dumps({"id": request_id, "inputs": [tensor], "parameters": {"cost": True}})

    async with (
        connect(stream_url(server, "trio"), compression=None) as first,
        connect(stream_url(server, "trio"), compression=None) as second,
    ):
        # The model's batches leave only when they hold 3 rows: 1 row + 2 rows, one per socket.
        await first.send(trio_request("one-row", 1))
        await second.send(trio_request("two-rows", 2))
        a = (await answers(first, 1))["one-row"]
        b = (await answers(second, 1))["two-rows"]
    assert a["parameters"]["batch_rows"] == 3 and b["parameters"]["batch_rows"] == 3
    assert a["outputs"][0]["shape"] == [1, 4] and b["outputs"][0]["shape"] == [2, 4]
    assert a["outputs"][0]["data"] == [2.0] * 4


async def test_closing_a_socket_drops_its_queued_messages(server: ServerProcess) -> None:
    def cancelled() -> float:
        return metric(server.url, "inferd_requests_total", model="trio", outcome="cancelled") or 0

    before = cancelled()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}
    async with connect(stream_url(server, "trio"), compression=None) as ws:
        # One row waits for a batch of three that never fills; then the client leaves.
        await ws.send(json.dumps({"id": "waiting", "inputs": [tensor]}))
        # Messages start in order: once the next one is answered, the first one is queued.
        await ws.send("{not json")
        assert "malformed JSON" in (await answers(ws, 1))["2"]["error"]
    # The server cancels the request of the client that left (it will never be computed).
    await _until(lambda: cancelled() == before + 1)


async def test_a_client_that_does_not_read_is_throttled(server: ServerProcess) -> None:
    """The server reads at most max_in_flight messages ahead of the answers the client took:
    the flood stops at the TCP buffers, and the server's memory stays put."""
    total = 3000
    body = json.dumps(echo_request(0.5, rows=1024))  # about 65 kB, and as much back
    head, tail = body[:1], body[1:]
    url = stream_url(server, "echo", "?max_in_flight=4")
    # close_timeout: the server is still busy with the flood and answers a close late.
    async with connect(url, compression=None, max_queue=4, close_timeout=0.5) as ws:
        for _ in range(3):  # warm up the large-message path before measuring memory
            await ws.send(body)
            await ws.recv()
        rss_before = _rss_bytes(server.proc.pid)
        computed_before = _echo_requests(server)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await ws.send(f'{head}"id":"{i}",{tail}')
                sent += 1

        flooding = asyncio.create_task(flood())
        try:
            stalled_at = await _stalled(lambda: sent)
            computed = _echo_requests(server) - computed_before
            growth = _rss_bytes(server.proc.pid) - rss_before
            assert stalled_at < total
            # The server read less than the client sent: the rest waits in TCP buffers.
            assert computed < stalled_at
            assert growth < 64 * 1024 * 1024, f"server memory grew by {growth / 2**20:.0f} MiB"
            for _ in range(50):  # reading answers lets the flow go on
                await asyncio.wait_for(ws.recv(), 30)
            await _until(lambda: sent > stalled_at)
        finally:
            flooding.cancel()


async def test_the_handshake_refuses_unknown_models_and_bad_queries(server: ServerProcess) -> None:
    for url, status, words in (
        (stream_url(server, "nope"), 404, "unknown model 'nope'"),
        (stream_url(server, "echo", "?max_in_flight=0"), 400, "max_in_flight"),
        (stream_url(server, "echo", "?window=3"), 400, "unknown query parameter 'window'"),
        (f"ws://127.0.0.1:{server.port}/v2/models/echo/infer", 404, "/v2/models/{name}/stream"),
    ):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url):
                pass
        assert caught.value.response.status_code == status
        assert words in json.loads(bytes(caught.value.response.body or b""))["error"]


def test_the_example_in_the_docs_runs_as_printed(server: ServerProcess) -> None:
    (example,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    code = example.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.split()) == ["m0", "m1", "m2"]


# --- helpers --------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _echo_requests(server: ServerProcess) -> float:
    return metric(server.url, "inferd_requests_total", model="echo", outcome="success") or 0.0


async def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


async def _stalled(count: Callable[[], int], quiet_s: float = 1.0, timeout_s: float = 60.0) -> int:
    """The count once it has not moved for ``quiet_s``."""
    async with asyncio.timeout(timeout_s):
        last = -1
        while count() != last:
            last = count()
            await asyncio.sleep(quiet_s)
    return last
