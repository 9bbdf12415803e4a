"""The Open Inference Protocol end to end: a real server, the real ``tritonclient.http``."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from inferd.demo import held_out_digits
from tests.integration.server import ServerProcess

ALL_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

IDENTITY_MODEL = """
class Identity:
    def predict(self, inputs):
        return {name.replace("in_", "out_"): value for name, value in inputs.items()}
"""


def _identity_repo(root: Path) -> Path:
    folder = root / "identity"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(IDENTITY_MODEL))
    toml = ['backend = "python"', 'entry_point = "model.py:Identity"', "[batching]",
            "max_batch_size = 8"]  # fmt: skip
    for kind, prefix in (("inputs", "in_"), ("outputs", "out_")):
        for dt in ALL_TYPES:
            toml += [f"[[{kind}]]", f'name = "{prefix}{dt}"', f'datatype = "{dt}"',
                     "shape = [-1, -1]"]  # fmt: skip
    (folder / "model.toml").write_text("\n".join(toml) + "\n")
    big = root / "big"
    big.mkdir()
    (big / "model.py").write_text(
        "class Copy:\n    def predict(self, inputs):\n        return {'y': inputs['x'] + 1}\n"
    )
    (big / "model.toml").write_text(
        'backend = "python"\nentry_point = "model.py:Copy"\n[batching]\nmax_batch_size = 4\n'
        '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, -1]\n'
        '[[outputs]]\nname = "y"\ndatatype = "FP32"\nshape = [-1, -1]\n'
    )
    return root


@pytest.fixture(scope="module")
def server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(demo_repo, root / "demo")
    _identity_repo(root / "extra")
    with ServerProcess([root / "demo", root / "extra"], log_dir=root) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=8)
    yield c
    c.close()


def _input(name: str, data: np.ndarray, binary: bool) -> triton.InferInput:
    datatype = triton.np_to_triton_dtype(data.dtype)
    tensor = triton.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "inferd"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])


def test_model_metadata_is_read_from_the_models(client: triton.InferenceServerClient) -> None:
    for name in ("echo", "digits_sklearn", "digits_onnx", "digits_torch", "mlp"):
        assert client.is_model_ready(name)
    meta = client.get_model_metadata("digits_sklearn")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    onnx_meta = client.get_model_metadata("digits_onnx", model_version="1")
    assert onnx_meta["outputs"][0]["shape"] == [-1, 10]


def test_model_config_is_tritons_document(client: triton.InferenceServerClient) -> None:
    """tritonclient's get_model_config: Triton's fields, dims without the batch axis."""
    config = client.get_model_config("mlp")
    assert config["name"] == "mlp" and config["backend"] == "torch"
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [512]}]
    assert config["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    assert config["instance_group"][0]["count"] == 1
    assert config["parameters"]["precision"] == {"string_value": "fp32"}
    versioned = client.get_model_config("digits_onnx", model_version="1")
    assert versioned["input"][0]["dims"] == [64]
    with pytest.raises(InferenceServerException, match=r"404.*unknown model 'nope'"):
        client.get_model_config("nope")


def test_inference_statistics_count_what_was_served(client: triton.InferenceServerClient) -> None:
    """tritonclient's get_inference_statistics: Triton's statistics extension."""
    before = client.get_inference_statistics("echo")["model_stats"][0]
    x = np.ones((2, 16), np.float32)
    for _ in range(3):
        client.infer("echo", [_input("input", x, binary=True)])
    after = client.get_inference_statistics("echo")["model_stats"][0]
    assert after["name"] == "echo" and after["version"] == "1"
    success = after["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 3
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["inference_count"] >= before["inference_count"] + 6  # rows
    assert after["last_inference"] > 0
    assert any(b["batch_size"] == 2 for b in after["batch_stats"])
    everything = client.get_inference_statistics()["model_stats"]
    assert {"echo", "mlp", "digits_onnx"} <= {m["name"] for m in everything}


@pytest.mark.parametrize("binary", [False, True])
def test_echo_returns_its_input(client: triton.InferenceServerClient, binary: bool) -> None:
    data = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    out = triton.InferRequestedOutput("output", binary_data=binary)
    result = client.infer(
        "echo", [_input("input", data, binary)], outputs=[out], request_id="req-42"
    )
    np.testing.assert_array_equal(result.as_numpy("output"), data)
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["model_version"] == "1"


def test_nan_and_infinities_cross_json_as_triton_sends_them(
    client: triton.InferenceServerClient,
) -> None:
    # tritonclient writes NaN and Infinity literals, and reads them back, as Triton does.
    data = np.full((1, 16), 2.5, dtype=np.float32)
    data[0, :3] = [np.nan, np.inf, -np.inf]
    out = triton.InferRequestedOutput("output", binary_data=False)
    result = client.infer("echo", [_input("input", data, False)], outputs=[out])
    np.testing.assert_array_equal(result.as_numpy("output"), data)


def _sample(datatype: str, rng: np.random.Generator) -> np.ndarray:
    shape = (2, 3)
    if datatype == "BYTES":
        return np.array([[f"s{i}{j}".encode() for j in range(3)] for i in range(2)], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dtype = np.dtype(ALL_TYPES[datatype])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=dtype)


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips(client: triton.InferenceServerClient, binary: bool) -> None:
    rng = np.random.default_rng(1)
    samples = {dt: _sample(dt, rng) for dt in ALL_TYPES}
    inputs = [_input(f"in_{dt}", value, binary) for dt, value in samples.items()]
    outputs = [triton.InferRequestedOutput(f"out_{dt}", binary_data=binary) for dt in ALL_TYPES]
    result = client.infer("identity", inputs, outputs=outputs)
    for dt, value in samples.items():
        got = result.as_numpy(f"out_{dt}")
        assert got is not None, dt
        if dt == "BYTES" and not binary:  # tritonclient hands JSON strings back as str
            value = np.vectorize(bytes.decode, otypes=[object])(value)
        assert got.dtype == value.dtype, dt
        np.testing.assert_array_equal(got, value, err_msg=dt)


@pytest.mark.parametrize("model", ["digits_sklearn", "digits_onnx", "digits_torch"])
def test_served_digits_models_are_accurate(
    client: triton.InferenceServerClient, demo_repo: Path, model: str
) -> None:
    x, y = held_out_digits()
    output = {"digits_sklearn": "probabilities", "digits_onnx": "probabilities"}.get(
        model, "logits"
    )
    result = client.infer(
        model, [_input("input", x, True)], outputs=[triton.InferRequestedOutput(output)]
    )
    scores = result.as_numpy(output)
    assert scores.shape == (len(x), 10)
    accuracy = float((scores.argmax(axis=1) == y).mean())
    manifest = json.loads((demo_repo / "demo.json").read_text())
    assert round(accuracy, 4) == manifest[model]["accuracy"]  # the manifest keeps 4 places
    assert accuracy > 0.9


def test_output_selection_returns_only_what_was_asked(
    client: triton.InferenceServerClient,
) -> None:
    x, _ = held_out_digits()
    result = client.infer(
        "digits_sklearn",
        [_input("input", x[:5], False)],
        outputs=[triton.InferRequestedOutput("label", binary_data=False)],
    )
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["label"]
    assert result.as_numpy("label").shape == (5,)


def test_a_request_larger_than_the_batch_is_split_and_reassembled(
    client: triton.InferenceServerClient,
) -> None:
    x = np.arange(11 * 5, dtype=np.float32).reshape(11, 5)  # max_batch_size is 4
    result = client.infer("big", [_input("x", x, True)])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_four_mib_binary_tensor(client: triton.InferenceServerClient) -> None:
    x = np.random.default_rng(2).standard_normal((4, 262144)).astype(np.float32)  # 4 MiB
    result = client.infer("big", [_input("x", x, True)])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_compressed_request_and_response(client: triton.InferenceServerClient) -> None:
    data = np.ones((64, 16), np.float32)
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "echo",
            [_input("input", data, True)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("output"), data)


def test_concurrent_clients_each_get_their_own_answer(server: ServerProcess) -> None:
    def one(i: int) -> bool:
        data = np.full((1 + i % 3, 16), float(i), np.float32)
        c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            for _ in range(5):
                got = c.infer("echo", [_input("input", data, i % 2 == 0)]).as_numpy("output")
                if not np.array_equal(got, data):
                    return False
            return True
        finally:
            c.close()

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(64)))


def test_async_infer(client: triton.InferenceServerClient) -> None:
    data = [np.full((1, 16), float(i), np.float32) for i in range(16)]
    handles = [client.async_infer("echo", [_input("input", d, True)]) for d in data]
    for d, handle in zip(data, handles, strict=True):
        np.testing.assert_array_equal(handle.get_result().as_numpy("output"), d)


def test_curl_style_json_and_docs(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                        "data": [[float(i) for i in range(16)]]}]}  # fmt: skip
    r = httpx.post(f"{server.url}/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [float(i) for i in range(16)]
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "digits_sklearn" in docs.text and "curl" in docs.text
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v2/models/{model}/infer" in spec["paths"]
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    assert {m["name"] for m in index} >= {"echo", "identity", "digits_onnx"}
