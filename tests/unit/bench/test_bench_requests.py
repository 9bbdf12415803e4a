"""Request making: tensors from metadata, JSON and binary bodies (decoded by inferd's own codec),
input files, OpenAI bodies, and the response head parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from inferd.bench import BenchSpec
from inferd.bench.connection import Endpoint, _parse_head
from inferd.bench.llm_stream import _generated, _streaming, prompt
from inferd.bench.protocols import read_bodies
from inferd.bench.tensors import encode, generated_body, rows_of
from inferd.errors import ConfigError
from inferd.server.codec import decode_request

METADATA: dict[str, Any] = {
    "name": "m",
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 16]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "mask", "datatype": "BOOL", "shape": [-1, 3]},
    ],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 16]}],
}


def spec(**changes: Any) -> BenchSpec:
    return BenchSpec(url="http://127.0.0.1:9", model="m", **changes)


def test_generated_shapes_put_rows_first_and_one_in_other_variable_dims() -> None:
    body = generated_body(spec(rows=4), METADATA)
    shapes = {t["name"]: t["shape"] for t in body["inputs"]}
    assert shapes == {"x": [4, 16], "ids": [4, 1], "text": [4], "mask": [4, 3]}
    for tensor in body["inputs"]:
        assert len(tensor["data"]) == int(np.prod(tensor["shape"]))
    assert rows_of(body) == 4


def test_shape_option_sets_a_whole_shape() -> None:
    body = generated_body(spec(shapes=(("ids", (2, 7)),)), METADATA)
    assert body["inputs"][1]["shape"] == [2, 7]
    assert len(body["inputs"][1]["data"]) == 14
    with pytest.raises(ConfigError, match=r"--shape names \['nope'\]"):
        generated_body(spec(shapes=(("nope", (1,)),)), METADATA)


def test_json_and_binary_bodies_decode_to_the_same_tensors() -> None:
    body = generated_body(spec(rows=3, seed=11), METADATA)
    as_json, json_headers = encode(body, binary=False)
    as_binary, binary_headers = encode(body, binary=True)
    assert json_headers == {"Content-Type": "application/json"}
    header_length = int(binary_headers["Inference-Header-Content-Length"])
    from_json = decode_request(as_json, None)
    from_binary = decode_request(as_binary, header_length)
    assert from_binary.binary_output_default  # binary answers are asked for too
    assert set(from_json.inputs) == set(from_binary.inputs) == {"x", "ids", "text", "mask"}
    for name in ("x", "ids", "mask"):
        np.testing.assert_array_equal(
            from_json.inputs[name].astype(from_binary.inputs[name].dtype),
            from_binary.inputs[name],
        )
    assert list(from_binary.inputs["text"]) == [s.encode() for s in body["inputs"][2]["data"]]


def test_same_seed_same_data() -> None:
    assert generated_body(spec(seed=1), METADATA) == generated_body(spec(seed=1), METADATA)
    assert generated_body(spec(seed=1), METADATA) != generated_body(spec(seed=2), METADATA)


def test_input_file_one_object_or_json_lines(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text('{\n  "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",\n'
                   '  "data": [1, 2]}]\n}\n')  # fmt: skip
    assert rows_of(read_bodies(str(one))[0]) == 2
    lines = tmp_path / "many.jsonl"
    lines.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert read_bodies(str(lines)) == [{"prompt": "a"}, {"prompt": "b"}]


def test_input_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(ConfigError, match=r"--input-file .*bad.jsonl, line 2: not JSON"):
        read_bodies(str(bad))
    with pytest.raises(ConfigError, match=r"--input-file .*missing.json: cannot read it"):
        read_bodies(str(tmp_path / "missing.json"))


def test_openai_bodies_stream_with_usage_and_the_spec_model() -> None:
    s = spec(api="openai", prompt_tokens=20, max_tokens=7)
    body = _streaming(s, _generated(s, 0))
    assert body["model"] == "m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 7 and body["ignore_eos"] is True
    assert len(body["prompt"].split()) == 20
    chat = _streaming(spec(api="openai", chat=True), _generated(spec(chat=True), 0))
    assert chat["messages"][0]["role"] == "user"
    assert prompt(10, 1) != prompt(10, 2)


def test_request_bytes_carry_the_prefix_and_length() -> None:
    endpoint = Endpoint.from_url("http://example:8080/base/")
    raw = endpoint.request("POST", "/v2/models/m/infer", b"{}", {"X-A": "1"})
    assert raw.startswith(b"POST /base/v2/models/m/infer HTTP/1.1\r\nHost: example:8080\r\n")
    assert b"Content-Length: 2\r\nX-A: 1\r\n\r\n{}" in raw
    assert orjson.loads(raw.split(b"\r\n\r\n", 1)[1]) == {}


@pytest.mark.parametrize(
    ("head", "status", "length", "chunked", "close"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", 200, 12, False, False),
        (b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
         503, None, True, True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 200, 3, False, True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 200, None, False, False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, 0, False, False),
    ],
)  # fmt: skip
def test_response_heads(
    head: bytes, status: int, length: int | None, chunked: bool, close: bool
) -> None:
    parsed = _parse_head(head)
    assert (parsed.status, parsed.length, parsed.chunked, parsed.close) == (
        status,
        length,
        chunked,
        close,
    )


def test_a_head_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not an HTTP/1\.x response"):
        _parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")
