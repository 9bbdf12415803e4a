"""``inferd bench`` against real servers: a real ``inferd serve`` (KServe v2), whose /metrics must
count exactly what bench says it sent, and a small streaming OpenAI-style test server.

Every run is short (about a second); no test asserts a speed, only counts and kinds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from inferd.bench import BenchResult, BenchSpec, run_bench, save_result
from inferd.errors import InferdError
from tests.integration.server import ServerProcess, free_port

SLOW_PY = """\
import time


class Slow:
    def __init__(self, *args, **kwargs):
        pass

    def predict(self, inputs):
        time.sleep(0.02)
        return {"output": inputs["input"]}
"""

SLOW_TOML = """\
backend = "python"
entry_point = "model.py:Slow"
isolation = "thread"

[batching]
max_batch_size = 1
max_queue_rows = 1

[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 4]

[[outputs]]
name = "output"
datatype = "FP32"
shape = [-1, 4]
"""

ECHO_BODY = {
    "inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]
}


@pytest.fixture(scope="module")
def server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The demo echo; ``slow``: 20 ms a request, one at a time, one row of queue; ``sleepy``:
    the same with the default queue."""
    root = tmp_path_factory.mktemp("bench-repo")
    shutil.copytree(demo_repo / "echo", root / "echo")
    for name, toml in (("slow", SLOW_TOML), ("sleepy", SLOW_TOML.replace("max_queue_rows", "#"))):
        (root / name).mkdir()
        (root / name / "model.py").write_text(SLOW_PY)
        (root / name / "model.toml").write_text(toml)
    with ServerProcess([root], "--log-level", "warning", log_dir=root) as srv:
        yield srv


def outcomes(server: ServerProcess, model: str) -> dict[str, float]:
    """The server's own count of requests by outcome, and of inferences (rows)."""
    text = httpx.get(f"{server.url}/metrics").text
    found = {
        outcome: float(value)
        for outcome, value in re.findall(
            rf'^inferd_requests_total{{model="{model}",outcome="(\w+)"}} (\S+)$', text, re.M
        )
    }
    rows = re.search(rf'^inferd_inferences_total{{model="{model}"}} (\S+)$', text, re.M)
    assert rows is not None
    found["rows"] = float(rows.group(1))
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def bench_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferd", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- KServe against inferd ------------------------------------------------------------------


def test_closed_loop_counts_what_the_server_counts(server: ServerProcess, tmp_path: Path) -> None:
    before = outcomes(server, "echo")
    out = tmp_path / "closed.json"
    run = bench_cli(server.url, "--model", "echo", "-c", "4", "-d", "1", "--warmup", "0",
                    "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["num_ok"] > 0 and result["errors"] == {}
    served = delta(before, outcomes(server, "echo"))
    assert served["success"] == result["num_ok"]
    assert served["rows"] == result["num_ok"]
    assert result["rows_per_s"] == result["throughput_rps"]
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert "throughput" in run.stdout and "closed loop, 4 clients" in run.stdout


def test_open_loop_ramp_binary_rows_and_warmup(server: ServerProcess, tmp_path: Path) -> None:
    before = outcomes(server, "echo")
    out = tmp_path / "open.json"
    run = bench_cli(server.url, "-m", "echo", "--rate", "100", "--rate-end", "200", "-d", "1",
                    "--warmup", "0.5", "--binary", "--rows", "4", "--slo-ms", "1000",
                    "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["num_warmup"] > 0
    served = delta(before, outcomes(server, "echo"))
    # The warm-up's requests reached the server too; each carried 4 rows.
    assert served["success"] == result["num_ok"] + result["num_warmup"]
    assert served["rows"] == 4 * served["success"]
    assert result["rows_per_request"] == 4
    assert result["rows_per_s"] == pytest.approx(4 * result["throughput_rps"])
    assert result["offered_rps"] > 0 and result["send_lag_ms"]["p50"] is not None
    assert result["goodput_rps"] <= result["throughput_rps"]
    assert "open loop, Poisson 100/s ramping to 200" in run.stdout


def test_overload_is_counted_by_kind(server: ServerProcess, tmp_path: Path) -> None:
    before = outcomes(server, "slow")
    out = tmp_path / "shed.json"
    run = bench_cli(server.url, "-m", "slow", "-c", "8", "-d", "1", "--warmup", "0",
                    "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    served = delta(before, outcomes(server, "slow"))
    assert set(result["errors"]) == {"http 503"}
    assert result["errors"]["http 503"] == served["shed"] > 0
    assert result["num_ok"] == served["success"] > 0
    assert "error        http 503:" in run.stdout


def test_requests_past_the_timeout_count_as_timeouts(server: ServerProcess) -> None:
    # sleepy takes 20 ms a request; a 5 ms timeout fails every one of them.
    spec = BenchSpec(url=server.url, model="sleepy", concurrency=2, num_requests=6, warmup_s=0.0,
                     timeout_s=0.005)  # fmt: skip
    result = run_bench(spec)
    assert result.errors == {"timeout": 6} and result.num_ok == 0


def test_open_loop_past_its_outstanding_bound(server: ServerProcess) -> None:
    # 200 arrivals/s at a model that answers 50/s, with room for 2 in flight.
    spec = BenchSpec(url=server.url, model="sleepy", concurrency=None, rate=200.0,
                     num_requests=20, warmup_s=0.0, max_outstanding=2)  # fmt: skip
    result = run_bench(spec)
    assert set(result.errors) == {"client overloaded"}
    assert result.num_ok + result.errors["client overloaded"] == 20
    assert result.num_ok >= 2
    assert any("client overloaded" in w for w in result.warnings)


def test_unknown_model_is_an_error_kind_or_a_clear_refusal(
    server: ServerProcess, tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps(ECHO_BODY))
    out = tmp_path / "unknown.json"
    run = bench_cli(server.url, "-m", "nope", "--input-file", str(body), "-n", "20",
                    "--warmup", "0", "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == {"http 404": 20} and result["num_ok"] == 0
    assert "no request succeeded" in result["warnings"]
    # Without an input file the model's metadata is needed, and its absence stops the run.
    refused = bench_cli(server.url, "-m", "nope", "-d", "1")
    assert refused.returncode == 1
    assert "model 'nope'" in refused.stderr and "404" in refused.stderr


def test_request_count_split_over_two_processes(server: ServerProcess) -> None:
    before = outcomes(server, "echo")
    spec = BenchSpec(url=server.url, model="echo", concurrency=4, processes=2,
                     num_requests=300, warmup_s=0.0)  # fmt: skip
    result = run_bench(spec)
    assert result.num_ok == 300 and result.num_errors == 0
    assert delta(before, outcomes(server, "echo"))["success"] == 300
    assert 0.0 < result.generator_cpu <= 1.0


def test_unreachable_server_counts_connect_errors(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(InferdError, match="cannot reach"):
        run_bench(BenchSpec(url=url, model="m", duration_s=1.0))  # it needs the metadata
    body = tmp_path / "body.json"
    body.write_text(json.dumps(ECHO_BODY))
    spec = BenchSpec(url=url, model="m", concurrency=2, num_requests=6, warmup_s=0.0,
                     input_file=str(body))  # fmt: skip
    result = run_bench(spec)
    assert result.errors == {"connect": 6} and result.num_ok == 0


def test_compare_prints_two_saved_runs(server: ServerProcess, tmp_path: Path) -> None:
    paths = []
    for clients in (1, 4):
        spec = BenchSpec(url=server.url, model="echo", concurrency=clients, num_requests=100,
                         warmup_s=0.0)  # fmt: skip
        paths.append(tmp_path / f"c{clients}.json")
        save_result(run_bench(spec), paths[-1])
    run = bench_cli("--compare", *map(str, paths))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("c1: ") and lines[0].endswith("closed loop, 1 client")
    assert lines[1].startswith("c4: ") and "closed loop, 4 clients" in lines[1]
    ok_row = next(line for line in lines if line.startswith("ok "))
    assert ok_row.split()[1:] == ["100", "100", "1.00"]


# --- HTTP framing against a raw test server -------------------------------------------------


class RawTestServer:
    """A raw asyncio HTTP server on a thread (a test server): answers every request with
    ``answer``, then closes the connection after ``close_after_s`` (None: keeps it open)."""

    def __init__(self, answer: bytes, close_after_s: float | None) -> None:
        self.answer = answer
        self.close_after_s = close_after_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in self._writers:
            writer.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.run_until_complete(asyncio.sleep(0.01))  # let the transports close
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.I)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(self.answer)
                if self.close_after_s is not None:
                    await asyncio.sleep(self.close_after_s)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def __enter__(self) -> RawTestServer:
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def test_answers_framed_by_closing_the_connection(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps(ECHO_BODY))
    answer = b'HTTP/1.0 200 OK\r\n\r\n{"outputs": []}'  # no length: the body ends at close
    with RawTestServer(answer, close_after_s=0.0) as server:
        spec = BenchSpec(url=server.url, model="m", concurrency=2, num_requests=10,
                         warmup_s=0.0, input_file=str(body))  # fmt: skip
        result = run_bench(spec)
    assert result.num_ok == 10 and result.errors == {}
    assert server.connections == 10  # a new connection for every request


def test_kept_alive_connections_the_server_closed_are_replaced(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps(ECHO_BODY))
    answer = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"outputs": []}'
    # The server drops each connection 20 ms after answering; arrivals come ~100 ms apart,
    # so requests find their kept-alive connection closed and must send again on a new one.
    with RawTestServer(answer, close_after_s=0.02) as server:
        spec = BenchSpec(url=server.url, model="m", concurrency=None, rate=10.0, num_requests=8,
                         warmup_s=0.0, input_file=str(body))  # fmt: skip
        result = run_bench(spec)
    assert result.num_ok == 8 and result.errors == {}
    assert server.connections == 8  # every request ended up on a fresh connection


# --- OpenAI streaming against a test server --------------------------------------------------


class StreamingTestServer:
    """A tiny OpenAI-style SSE server (a test server, not inferd): streams ``max_tokens`` chunks,
    a usage chunk when asked, then [DONE]. ``refuse_ignore_eos`` answers 400 to ignore_eos."""

    def __init__(self, refuse_ignore_eos: bool = False, usage: bool = True) -> None:
        self.refuse_ignore_eos = refuse_ignore_eos
        self.usage = usage
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, port=self.port, log_level="warning", lifespan="off", interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        self.received.append((scope["path"], body))
        if body.get("model") != "tiny":
            await self._json(send, 404, {"error": {"message": "no such model"}})
            return
        if self.refuse_ignore_eos and "ignore_eos" in body:
            await self._json(send, 400, {"error": {"message": "Unrecognized argument ignore_eos"}})
            return
        chat = scope["path"].endswith("/chat/completions")
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(body["max_tokens"]):
            choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
            await self._event(send, {"choices": [choice]})
            await asyncio.sleep(0.001)
        if self.usage and body.get("stream_options", {}).get("include_usage"):
            await self._event(send, {"choices": [], "usage": {"completion_tokens": i + 1}})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _event(self, send: Any, payload: dict[str, Any]) -> None:
        data = b"data: " + json.dumps(payload).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _json(self, send: Any, status: int, payload: dict[str, Any]) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    def __enter__(self) -> StreamingTestServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def openai_spec(url: str, **changes: Any) -> BenchSpec:
    values: dict[str, Any] = {"url": url, "model": "tiny", "api": "openai", "concurrency": 2,
                              "num_requests": 12, "warmup_s": 0.0, "max_tokens": 5,
                              "prompt_tokens": 16}  # fmt: skip
    return BenchSpec(**(values | changes))


def test_openai_stream_times_tokens() -> None:
    with StreamingTestServer() as server:
        result = run_bench(openai_spec(server.url))
    assert result.num_ok == 12 and result.errors == {}
    assert result.output_tokens_per_s is not None
    assert result.output_tokens_per_s * result.duration_s == pytest.approx(12 * 5)
    assert result.ttft_ms is not None and result.itl_ms is not None
    assert 0 < result.ttft_ms["p50"] <= result.latency_ms["max"]
    assert result.itl_ms["p50"] > 0
    path, body = server.received[-1]
    assert path == "/v1/completions" and body["stream"] is True and body["ignore_eos"] is True
    assert body["model"] == "tiny" and len(body["prompt"].split()) == 16
    assert len({b["prompt"] for _, b in server.received}) > 1  # prompts vary


def test_openai_chat_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "chat.json"
    with StreamingTestServer(usage=False) as server:
        run = bench_cli(server.url, "-m", "tiny", "--api", "openai", "--chat", "-c", "2", "-n",
                        "6", "--warmup", "0", "--max-tokens", "3", "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = BenchResult.from_json(json.loads(out.read_text()))
    assert result.num_ok == 6
    # No usage chunk: tokens are counted one per content chunk.
    assert result.output_tokens_per_s is not None
    assert result.output_tokens_per_s * result.duration_s == pytest.approx(6 * 3)
    assert {path for path, _ in server.received} == {"/v1/chat/completions"}
    assert "ttft ms" in run.stdout and "tokens/s" in run.stdout


def test_openai_server_that_refuses_ignore_eos() -> None:
    with StreamingTestServer(refuse_ignore_eos=True) as server:
        result = run_bench(openai_spec(server.url, num_requests=4))
    assert result.num_ok == 4 and result.errors == {}
    assert any("refused ignore_eos" in w for w in result.warnings)
    assert all("ignore_eos" not in body for _, body in server.received[-4:])


def test_openai_errors_by_kind() -> None:
    with StreamingTestServer() as server:
        result = run_bench(openai_spec(server.url, model="missing", num_requests=3))
    assert result.errors == {"http 404": 3} and result.num_ok == 0
    assert result.ttft_ms is not None and math.isnan(result.ttft_ms["p50"])


# --- OpenAI streaming against inferd ---------------------------------------------------------


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``inferd serve`` of a tiny random-weight Llama (the OpenAI API tests' checkpoint)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.integration.llm_checkpoint import write_tiny_llama

    folder = write_tiny_llama(tmp_path_factory.mktemp("bench-llm") / "tiny")
    (folder / "model.toml").write_text(
        'backend = "llm"\n\n[llm]\nkv_cache_mb = 4\nblock_size = 8\nmax_num_seqs = 16\n'
    )
    with ServerProcess([folder], "--log-level", "warning", log_dir=folder.parent) as srv:
        yield srv


def llm_counts(server: ServerProcess) -> tuple[float, float]:
    """inferd's own count of successful LLM requests and of output tokens."""
    text = httpx.get(f"{server.url}/metrics").text
    ok = re.search(r'^inferd_llm_requests_total{model="tiny",outcome="success"} (\S+)$', text, re.M)
    tokens = re.search(r'^inferd_llm_generation_tokens_total{model="tiny"} (\S+)$', text, re.M)
    assert ok is not None and tokens is not None
    return float(ok.group(1)), float(tokens.group(1))


def test_openai_stream_against_inferd(llm_server: ServerProcess) -> None:
    ok_before, tokens_before = llm_counts(llm_server)
    result = run_bench(openai_spec(llm_server.url, num_requests=8, max_tokens=6))
    assert result.num_ok == 8 and result.errors == {}
    assert result.warnings == () or all("generator" in w for w in result.warnings)
    assert result.output_tokens_per_s is not None
    assert result.output_tokens_per_s * result.duration_s == pytest.approx(8 * 6)
    ok_after, tokens_after = llm_counts(llm_server)
    # One more request than measured: the probe that checks ignore_eos is accepted (1 token).
    assert ok_after - ok_before == 8 + 1
    assert tokens_after - tokens_before == 8 * 6 + 1
