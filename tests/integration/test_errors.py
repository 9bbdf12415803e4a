"""Every bad input and fault gets a precise JSON error, and the server keeps serving.

One real ``inferd serve`` process (``--max-body-mb 1``) serves a repository of good, faulty and
broken models; each test sends one kind of mistake and checks the status code and that the JSON
``error`` names what was wrong; then the server must still answer correctly. A second server
(a tiny body limit, a model that calls ``sys.exit``) and the command line are tested at the end.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.integration.server import ServerProcess

MAX_BODY = 1024 * 1024  # --max-body-mb 1
ROW = [float(i) / 4 for i in range(16)]
ECHO_INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ROW}
MODELS = ("bad_config", "broken_onnx", "crashy", "echo", "no_output", "slow", "wrong_rows")

# --- the test repository ---------------------------------------------------------------------


def _io_toml(
    entry_point: str, datatype: str, width: int, batching: str, in_name: str = "input"
) -> str:
    return textwrap.dedent(
        f"""\
        backend = "python"
        entry_point = "model.py:{entry_point}"

        [batching]
        {batching}

        [[inputs]]
        name = "{in_name}"
        datatype = "{datatype}"
        shape = [-1, {width}]

        [[outputs]]
        name = "output"
        datatype = "{datatype}"
        shape = [-1, {width}]
        """
    )


CRASHY_PY = """\
from pathlib import Path

import numpy as np


class Crashy:
    def __init__(self, calls_file):
        self.calls = Path(calls_file)

    def predict(self, inputs):
        x = inputs["input"]
        with self.calls.open("a") as f:  # rows per call and whether a negative was in it
            f.write(f"{len(x)} {int((x < 0).any())}\\n")
        if (x < 0).any():
            raise ValueError("cannot handle negative input")
        return {"output": x * 2}
"""

WRONG_ROWS_PY = """\
class WrongRows:
    def predict(self, inputs):
        return {"output": inputs["ids"][:-1]}
"""

NO_OUTPUT_PY = """\
class NoOutput:
    def predict(self, inputs):
        return {"something_else": inputs["input"]}
"""

SLOW_PY = """\
import time
from pathlib import Path


class Slow:
    def __init__(self, started_file):
        self.started = Path(started_file)

    def predict(self, inputs):
        self.started.touch()
        time.sleep(0.2)
        return {"output": inputs["input"]}
"""


def _python_model(root: Path, name: str, source: str, toml: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model.py").write_text(source)
    (folder / "model.toml").write_text(toml)
    return folder


def _build_repository(root: Path, demo_repo: Path) -> None:
    shutil.copytree(demo_repo / "echo", root / "echo")
    crashy = _python_model(
        root,
        "crashy",
        CRASHY_PY,
        # A long queue delay puts concurrent requests in one batch, so the bad one has batch-mates.
        _io_toml("Crashy", "FP32", 4, "max_batch_size = 64\nmax_queue_delay_ms = 300"),
    )
    (crashy / "model.toml").write_text(
        (crashy / "model.toml").read_text()
        + f"\n[parameters]\ncalls_file = {json.dumps(str(crashy / 'calls.log'))}\n"
    )
    _python_model(
        root,
        "wrong_rows",
        WRONG_ROWS_PY,
        _io_toml("WrongRows", "INT64", 3, "max_batch_size = 64", in_name="ids"),
    )
    _python_model(
        root, "no_output", NO_OUTPUT_PY, _io_toml("NoOutput", "FP32", 4, "max_batch_size = 64")
    )
    slow = _python_model(root, "slow", SLOW_PY, _io_toml("Slow", "FP32", 4, "max_batch_size = 1"))
    (slow / "model.toml").write_text(
        (slow / "model.toml").read_text()
        + f"\n[parameters]\nstarted_file = {json.dumps(str(slow / 'started'))}\n"
    )
    (root / "broken_onnx").mkdir()
    (root / "broken_onnx" / "model.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    (root / "bad_config").mkdir()
    (root / "bad_config" / "model.py").write_text(NO_OUTPUT_PY)
    (root / "bad_config" / "model.toml").write_text(
        'backend = "python"\n\n[batching]\nmax_batch_size = "big"\n'
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, demo_repo: Path) -> Path:
    root = tmp_path_factory.mktemp("errors-repo")
    _build_repository(root, demo_repo)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        [repo], "--max-body-mb", "1", log_dir=tmp_path_factory.mktemp("logs")
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


# --- helpers ---------------------------------------------------------------------------------


def expect_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """Assert the status and that the JSON ``error`` contains every fragment; return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    message = response.json()["error"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error {message!r}"
    return message


def binary_body(header: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary tensor data extension body and its Inference-Header-Content-Length header."""
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def fp32_input(name: str, rows: list[list[float]]) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": [len(rows), len(rows[0])],
        "data": [v for r in rows for v in r],
    }


def echo_is_correct(client: httpx.Client) -> None:
    r = client.post("/v2/models/echo/infer", json={"inputs": [ECHO_INPUT]})
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "output" and out["shape"] == [1, 16] and out["data"] == ROW


# --- routing ---------------------------------------------------------------------------------


def test_unknown_model_is_404_listing_available_models(client: httpx.Client) -> None:
    r = client.post("/v2/models/nope/infer", json={"inputs": [ECHO_INPUT]})
    expect_error(r, 404, "'nope'", "available models", "echo", "crashy", "broken_onnx")
    expect_error(client.get("/v2/models/nope"), 404, "'nope'", "echo")
    expect_error(client.get("/v2/models/nope/ready"), 404, "'nope'")


def test_unknown_version_is_404(client: httpx.Client) -> None:
    r = client.post("/v2/models/echo/versions/7/infer", json={"inputs": [ECHO_INPUT]})
    expect_error(r, 404, "'echo'", "version '7'", "available versions: 1")
    assert client.post("/v2/models/echo/versions/1/infer", json={"inputs": [ECHO_INPUT]}).is_success


@pytest.mark.parametrize(
    "path", ["/v2/nothing", "/v2/models/echo/bogus", "/nothing", "/v2/health/dead"]
)
def test_unknown_route_is_404_naming_the_path(client: httpx.Client, path: str) -> None:
    expect_error(client.get(path), 404, path)


def test_head_is_get_without_the_body(client: httpx.Client) -> None:
    for path in ("/v2/health/ready", "/v2/models/echo", "/metrics"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
    refused = client.head("/v2/models/echo/infer")
    assert refused.status_code == 405 and refused.content == b""


def test_get_on_infer_is_405(client: httpx.Client) -> None:
    expect_error(client.get("/v2/models/echo/infer"), 405, "GET", "/v2/models/echo/infer", "POST")
    expect_error(client.delete("/v2/health/ready"), 405, "DELETE", "GET")


# --- malformed and mismatched infer requests -------------------------------------------------


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _echo_with(**fields: Any) -> bytes:
    item = {**ECHO_INPUT, **fields}
    return _json({"inputs": [{k: v for k, v in item.items() if v is not None}]})


BAD_REQUESTS = [
    ("malformed_json", "echo", b'{"inputs": [', ["malformed JSON"]),
    ("json_not_an_object", "echo", b"[1, 2, 3]", ["JSON object", "list"]),
    ("missing_inputs", "echo", b"{}", ["'inputs'"]),
    ("empty_inputs", "echo", _json({"inputs": []}), ["'inputs'", "non-empty"]),
    ("inputs_not_a_list", "echo", _json({"inputs": {"a": 1}}), ["'inputs'", "list"]),
    ("input_not_an_object", "echo", _json({"inputs": [7]}), ["inputs[0]", "object"]),
    ("input_without_name", "echo", _echo_with(name=None), ["inputs[0]", "'name'"]),
    ("input_without_shape", "echo", _echo_with(shape=None), ["'input'", "'shape'"]),
    ("input_without_datatype", "echo", _echo_with(datatype=None), ["'input'", "datatype"]),
    ("input_without_data", "echo", _echo_with(data=None), ["'input'", "'data'"]),
    ("negative_dimension", "echo", _echo_with(shape=[-1, 16]), ["'input'", "'shape'"]),
    (
        "unknown_datatype",
        "echo",
        _echo_with(datatype="FLOAT32"),
        ["'input'", "'FLOAT32'", "not a v2 datatype"],
    ),
    (
        "datatype_not_matching_model",
        "echo",
        _echo_with(datatype="INT32", data=list(range(16))),
        ["'echo'", "'input'", "must be FP32", "INT32"],
    ),
    (
        "wrong_rank",
        "echo",
        _echo_with(shape=[16]),
        ["'echo'", "'input'", "[-1, 16]", "got [16]"],
    ),
    (
        "wrong_dims",
        "echo",
        _echo_with(shape=[1, 8], data=ROW[:8]),
        ["'echo'", "'input'", "[-1, 16]", "got [1, 8]"],
    ),
    (
        "data_length_not_matching_shape",
        "echo",
        _echo_with(data=ROW[:15]),
        ["'input'", "[1, 16]", "16 elements", "got 15"],
    ),
    (
        "ragged_nested_data",
        "echo",
        _echo_with(data=[ROW, ROW[:3]]),
        ["'input'", "evenly nested"],
    ),
    (
        "non_number_data_for_fp32",
        "echo",
        _echo_with(data=["a"] * 16),
        ["'input'", "FP32", "numbers", "'a'"],
    ),
    (
        "input_name_the_model_does_not_have",
        "echo",
        _json({"inputs": [ECHO_INPUT, {**ECHO_INPUT, "name": "extra"}]}),
        ["'echo'", "no input 'extra'", "'input'"],
    ),
    (
        "missing_input",
        "echo",
        _echo_with(name="x"),
        ["'echo'", "expects input 'input'", "FP32"],
    ),
    (
        "duplicate_input",
        "echo",
        _json({"inputs": [ECHO_INPUT, ECHO_INPUT]}),
        ["'input'", "more than once"],
    ),
    (
        "unknown_requested_output",
        "echo",
        _json({"inputs": [ECHO_INPUT], "outputs": [{"name": "nope"}]}),
        ["'nope'", "'output'"],
    ),
    (
        "non_integer_data_for_int64",
        "wrong_rows",
        _json(
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": [1, 2.5, 3]}]}
        ),
        ["'ids'", "INT64", "integers", "2.5"],
    ),
    (
        "string_data_for_int64",
        "wrong_rows",
        _json(
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": [1, "x", 3]}]}
        ),
        ["'ids'", "INT64", "integers", "'x'"],
    ),
    (
        "out_of_range_data_for_int8",
        "wrong_rows",
        _json(
            {"inputs": [{"name": "ids", "datatype": "INT8", "shape": [1, 3], "data": [1, 300, 3]}]}
        ),
        ["'ids'", "300", "out of range", "INT8"],
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "fragments"),
    [pytest.param(m, b, f, id=i) for i, m, b, f in BAD_REQUESTS],
)
def test_bad_infer_request_is_400_naming_the_problem(
    client: httpx.Client, model: str, body: bytes, fragments: list[str]
) -> None:
    r = client.post(
        f"/v2/models/{model}/infer", content=body, headers={"Content-Type": "application/json"}
    )
    expect_error(r, 400, *fragments)


def test_header_length_larger_than_body_is_400(client: httpx.Client) -> None:
    body = _json({"inputs": [ECHO_INPUT]})
    r = client.post(
        "/v2/models/echo/infer",
        content=body,
        headers={"Inference-Header-Content-Length": "99999"},
    )
    expect_error(r, 400, "Inference-Header-Content-Length", "99999", f"{len(body)} bytes")


def test_header_length_not_an_integer_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/echo/infer",
        content=_json({"inputs": [ECHO_INPUT]}),
        headers={"Inference-Header-Content-Length": "ten"},
    )
    expect_error(r, 400, "Inference-Header-Content-Length", "integer", "'ten'")


def _binary_input(size: int) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 16],
                "parameters": {"binary_data_size": size},
            }
        ]
    }


def test_binary_data_size_beyond_the_binary_section_is_400(client: httpx.Client) -> None:
    body, headers = binary_body(_binary_input(64), b"\x00" * 32)
    r = client.post("/v2/models/echo/infer", content=body, headers=headers)
    expect_error(r, 400, "'input'", "binary_data_size is 64", "only 32 bytes")


def test_binary_data_size_not_matching_the_shape_is_400(client: httpx.Client) -> None:
    body, headers = binary_body(_binary_input(32), b"\x00" * 32)
    r = client.post("/v2/models/echo/infer", content=body, headers=headers)
    expect_error(r, 400, "'input'", "[1, 16]", "needs 64 bytes", "binary_data_size is 32")


def test_binary_section_longer_than_binary_data_size_is_400(client: httpx.Client) -> None:
    body, headers = binary_body(_binary_input(64), b"\x00" * 80)
    r = client.post("/v2/models/echo/infer", content=body, headers=headers)
    expect_error(r, 400, "16 bytes", "left over")


def test_binary_data_size_without_header_length_is_400(client: httpx.Client) -> None:
    r = client.post("/v2/models/echo/infer", content=_json(_binary_input(64)) + b"\x00" * 64)
    # Without the header, the server parses the whole body as JSON: the trailing bytes break it.
    expect_error(r, 400, "malformed JSON")
    r = client.post("/v2/models/echo/infer", json=_binary_input(64))
    expect_error(r, 400, "'input'", "Inference-Header-Content-Length")


def test_binary_request_with_matching_sizes_works(client: httpx.Client) -> None:
    values = np.arange(16, dtype="<f4")
    body, headers = binary_body(_binary_input(64), values.tobytes())
    r = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == values.tolist()


# --- body size and content encoding ----------------------------------------------------------


def test_body_over_the_limit_with_content_length_is_413(client: httpx.Client) -> None:
    r = client.post("/v2/models/echo/infer", content=b" " * (MAX_BODY + 512 * 1024))
    expect_error(r, 413, str(MAX_BODY + 512 * 1024), f"limit of {MAX_BODY} bytes")
    echo_is_correct(client)


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(24):
            yield b" " * (64 * 1024)

    r = client.post("/v2/models/echo/infer", content=chunks())
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    expect_error(r, 413, f"limit of {MAX_BODY} bytes")
    echo_is_correct(client)


def test_small_chunked_body_works(client: httpx.Client) -> None:
    body = _json({"inputs": [ECHO_INPUT]})

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    r = client.post("/v2/models/echo/infer", content=chunks())
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ROW


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("GZip", gzip.compress), ("deflate", zlib.compress)],
)
def test_compressed_body_works(
    client: httpx.Client, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    r = client.post(
        "/v2/models/echo/infer",
        content=compress(_json({"inputs": [ECHO_INPUT]})),
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ROW


def test_gzip_body_inflating_over_the_limit_is_413(client: httpx.Client) -> None:
    bomb = gzip.compress(b" " * (4 * MAX_BODY))
    assert len(bomb) < MAX_BODY
    r = client.post("/v2/models/echo/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    expect_error(r, 413, "decompressed", f"limit of {MAX_BODY} bytes")


def test_garbage_gzip_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/echo/infer",
        content=b"definitely not gzip",
        headers={"Content-Encoding": "gzip"},
    )
    expect_error(r, 400, "not valid gzip")


def test_unsupported_content_encoding_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/echo/infer",
        content=_json({"inputs": [ECHO_INPUT]}),
        headers={"Content-Encoding": "br"},
    )
    expect_error(r, 400, "Content-Encoding", "'br'", "gzip")


# --- models that misbehave -------------------------------------------------------------------


def test_model_that_raises_is_500_with_its_message(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/crashy/infer", json={"inputs": [fp32_input("input", [[1, -2, 3, 4]])]}
    )
    expect_error(r, 500, "'crashy'", "ValueError", "cannot handle negative input")


def test_crash_does_not_fail_concurrent_batch_mates(
    client: httpx.Client, server: ServerProcess, repo: Path
) -> None:
    calls = repo / "crashy" / "calls.log"
    calls.unlink(missing_ok=True)
    good = [[[float(i), float(i + 1), float(i + 2), float(i + 3)]] for i in range(10)]
    bad = [[1.0, 2.0, -3.0, 4.0]]
    bodies = [{"inputs": [fp32_input("input", rows)]} for rows in [*good[:5], bad, *good[5:]]]

    def send(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            return c.post("/v2/models/crashy/infer", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(send, bodies))

    bad_response = responses.pop(5)
    expect_error(bad_response, 500, "'crashy'", "cannot handle negative input")
    for rows, r in zip(good, responses, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [2 * v for v in rows[0]]
    # The bad request really shared a batch with good ones (so the retry path was exercised).
    log = [tuple(int(v) for v in line.split()) for line in calls.read_text().splitlines()]
    assert any(rows > 1 and negative for rows, negative in log), log


def test_model_returning_too_few_rows_is_500(client: httpx.Client) -> None:
    ids = {"name": "ids", "datatype": "INT64", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}
    r = client.post("/v2/models/wrong_rows/infer", json={"inputs": [ids]})
    expect_error(r, 500, "'wrong_rows'", "'output'", "1 rows", "2 rows")


def test_model_missing_its_declared_output_is_500(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/no_output/infer", json={"inputs": [fp32_input("input", [[1, 2, 3, 4]])]}
    )
    expect_error(r, 500, "'no_output'", "declared output 'output'", "something_else")


def test_slow_model_does_not_block_another_model(
    client: httpx.Client, server: ServerProcess, repo: Path
) -> None:
    started = repo / "slow" / "started"
    started.unlink(missing_ok=True)
    finished: dict[str, list[float]] = {"slow": [], "echo": []}

    def call(model: str, body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            r = c.post(f"/v2/models/{model}/infer", json=body)
        finished[model].append(time.monotonic())
        return r

    slow_body = {"inputs": [fp32_input("input", [[1, 2, 3, 4]])]}
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(call, "slow", slow_body) for _ in range(8)]
        while not started.exists():  # a slow predict is running now
            time.sleep(0.005)
        echo = []
        for _ in range(5):  # one kept-alive connection: a new client per call costs ~30 ms
            echo.append(client.post("/v2/models/echo/infer", json={"inputs": [ECHO_INPUT]}))
            finished["echo"].append(time.monotonic())
        slow_responses = [f.result() for f in slow]

    assert all(r.status_code == 200 for r in echo + slow_responses)
    echo_done = max(finished["echo"])
    slow_done_first = sum(t < echo_done for t in finished["slow"])
    # slow computes one request at a time; echo must not wait for that queue.
    assert echo_done < max(finished["slow"])
    assert slow_done_first <= len(slow) // 2, finished


def test_request_with_more_rows_than_the_queue_holds_is_4xx_not_retry_later(
    client: httpx.Client,
) -> None:
    # echo queues at most 8192 rows (the default max_queue_rows): 9000 rows can never fit,
    # so "503, retry later" would send the client into an endless retry loop.
    rows = 9000
    values = np.ones((rows, 16), dtype="<f4")
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [rows, 16],
                "parameters": {"binary_data_size": values.nbytes},
            }
        ]
    }
    body, headers = binary_body(header, values.tobytes())
    r = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert r.status_code in (400, 413), (r.status_code, r.headers, r.text)
    assert "retry-after" not in r.headers
    expect_error(r, r.status_code, "'echo'", str(rows), "8192")
    echo_is_correct(client)


# --- models that cannot serve ----------------------------------------------------------------


def test_broken_onnx_is_not_ready_with_the_onnx_error(client: httpx.Client) -> None:
    meta = client.get("/v2/models/broken_onnx")
    assert meta.status_code == 200, meta.text
    assert meta.json()["name"] == "broken_onnx"
    r = client.get("/v2/models/broken_onnx/ready")
    assert r.status_code == 503, r.text
    assert r.json()["ready"] is False
    reason = expect_error(r, 503, "'broken_onnx'", "model.onnx")
    assert "protobuf" in reason.lower() or "onnx" in reason.lower(), reason
    r = client.post("/v2/models/broken_onnx/infer", json={"inputs": [ECHO_INPUT]})
    assert expect_error(r, 503, "'broken_onnx'", "model.onnx") == reason


def test_bad_config_is_not_ready_naming_file_and_key(client: httpx.Client, repo: Path) -> None:
    meta = client.get("/v2/models/bad_config")
    assert meta.status_code == 200, meta.text
    r = client.get("/v2/models/bad_config/ready")
    toml = str(repo / "bad_config" / "model.toml")
    reason = expect_error(r, 503, "'bad_config'", toml, "batching.max_batch_size", "'big'")
    r = client.post("/v2/models/bad_config/infer", json={"inputs": [ECHO_INPUT]})
    assert expect_error(r, 503, toml, "batching.max_batch_size") == reason


def test_repository_index_lists_every_model_with_state_and_reason(client: httpx.Client) -> None:
    r = client.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    index = {entry["name"]: entry for entry in r.json()}
    assert sorted(index) == sorted(MODELS)
    for name in ("echo", "crashy", "wrong_rows", "no_output", "slow"):
        assert index[name]["state"] == "READY", index[name]
        assert "reason" not in index[name]
    for name in ("broken_onnx", "bad_config"):
        assert index[name]["state"] == "UNAVAILABLE", index[name]
    assert "model.onnx" in index["broken_onnx"]["reason"]
    assert "batching.max_batch_size" in index["bad_config"]["reason"]
    assert client.get("/v2/repository/index").json() == r.json()


def test_server_is_ready_while_some_models_are_broken(client: httpx.Client) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/models/echo/ready").status_code == 200


def test_tritonclient_unknown_model_raises_naming_it(server: ServerProcess) -> None:
    triton = triton_http.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("input", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float32))
        with pytest.raises(InferenceServerException) as excinfo:
            triton.infer("no_such_model", [tensor])
        assert "no_such_model" in str(excinfo.value)
        assert "available models" in str(excinfo.value)
    finally:
        triton.close()


def test_server_still_serves_after_all_errors(client: httpx.Client, server: ServerProcess) -> None:
    assert server.proc.poll() is None, server.log()
    echo_is_correct(client)
    r = client.post(
        "/v2/models/crashy/infer", json={"inputs": [fp32_input("input", [[1, 2, 3, 4]])]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2, 4, 6, 8]
    # Every fault above was an expected one: none reached the "internal server error" path.
    assert "unexpected error" not in server.log(), server.log()


# --- a second, fragile server: a tiny body limit and a model that calls sys.exit ----------

EXITER_PY = """\
class Exiter:
    def predict(self, inputs):
        raise SystemExit("model gave up")
"""


@pytest.fixture(scope="module")
def fragile_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fragile-repo")
    shutil.copytree(repo / "echo", root / "echo")
    _python_model(root, "exiter", EXITER_PY, _io_toml("Exiter", "FP32", 4, "max_batch_size = 64"))
    with ServerProcess(
        [root], "--max-body-mb", "0.01", log_dir=tmp_path_factory.mktemp("fragile-logs")
    ) as proc:
        yield proc


def test_chunked_body_arriving_whole_over_a_small_limit_is_413(
    fragile_server: ServerProcess,
) -> None:
    limit = int(0.01 * 1024 * 1024)
    rows = 200
    body = _json({"inputs": [{**ECHO_INPUT, "shape": [rows, 16], "data": ROW * rows}]})
    assert limit < len(body) < 64 * 1024  # small enough for the server to read in one go

    def one_chunk() -> Iterator[bytes]:
        yield body

    r = httpx.post(f"{fragile_server.url}/v2/models/echo/infer", content=one_chunk())
    assert "content-length" not in r.request.headers
    expect_error(r, 413, f"limit of {limit} bytes")


def test_model_raising_system_exit_is_500_and_server_survives(
    fragile_server: ServerProcess,
) -> None:
    url = fragile_server.url
    body = {"inputs": [fp32_input("input", [[1, 2, 3, 4]])]}
    try:
        r = httpx.post(f"{url}/v2/models/exiter/infer", json=body, timeout=10.0)
    except httpx.TransportError as e:
        pytest.fail(f"no answer ({e!r}); server log:\n{fragile_server.log()[-3000:]}")
    expect_error(r, 500, "'exiter'", "SystemExit", "model gave up")
    time.sleep(0.2)  # let a dying server finish dying before asking again
    assert fragile_server.proc.poll() is None, fragile_server.log()[-3000:]
    r = httpx.post(f"{url}/v2/models/echo/infer", json={"inputs": [ECHO_INPUT]}, timeout=10.0)
    assert r.status_code == 200, r.text


# --- the command line ------------------------------------------------------------------------


def _inferd(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("inferd")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "inferd"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


def test_cli_serve_missing_path_exits_nonzero_naming_it() -> None:
    result = _inferd("serve", "/nonexistent/path", "--port", "0")
    assert result.returncode != 0
    assert "/nonexistent/path" in result.stderr, result.stderr
    assert "no such file" in result.stderr, result.stderr


def test_cli_help_mentions_serve_and_port() -> None:
    top = _inferd("--help")
    assert top.returncode == 0, top.stderr
    assert "serve" in top.stdout
    serve = _inferd("serve", "--help")
    assert serve.returncode == 0, serve.stderr
    assert "--port" in serve.stdout
