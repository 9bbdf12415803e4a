"""The v2 request decoder and response encoder, including interop with tritonclient."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from inferd.errors import InvalidRequest, ModelError
from inferd.server.codec import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    content_type,
    decode_request,
    encode_response,
)

NUMERIC = {
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
}
DATATYPES = [*NUMERIC, "BYTES"]


def sample(datatype: str) -> NDArray[Any]:
    """A [2, 3] array of ``datatype`` that includes its extreme values."""
    if datatype == "BYTES":
        return np.array([[b"a", b"", "\u00e9t\u00e9".encode()], [b"x" * 40, b"0", b"z"]], object)
    dtype = np.dtype(NUMERIC[datatype])
    if dtype.kind == "b":
        return np.array([[True, False, True], [False, False, True]])
    info: Any = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=dtype)


def json_values(array: NDArray[Any]) -> list[Any]:
    if array.dtype == object:
        return [v.decode() for v in array.reshape(-1)]
    return array.reshape(-1).tolist()


def join(chunks: list[bytes | memoryview]) -> bytes:
    return b"".join(chunks)


def tensor(name: str = "x", datatype: Any = "FP32", shape: Any = (2,), **fields: Any) -> Any:
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"name": name, "datatype": datatype, "shape": shape, **fields}


def request(*inputs: Any, **extra: Any) -> bytes:
    # The standard library writes integers past 64 bits, which orjson refuses.
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_request(*inputs: Any, payload: bytes, **extra: Any) -> tuple[bytes, int]:
    header = request(*inputs, **extra)
    return header + payload, len(header)


def from_client(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None
) -> InferRequest:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs)
    return decode_request(body, json_size)


def client_result(
    outputs: dict[str, NDArray[Any]], requested: list[RequestedOutput] | None, binary: bool
) -> triton.InferResult:
    chunks, header_length = encode_response(
        InferResponse("m", "1", None, outputs), requested, binary
    )
    return triton.InferResult.from_response_body(join(chunks), header_length=header_length)


def assert_same(actual: NDArray[Any], expected: NDArray[Any]) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.dtype == object
        assert actual.tolist() == expected.tolist()
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
def test_json_input_decodes_to_declared_dtype_and_shape(datatype: str) -> None:
    expected = sample(datatype)
    body = request(tensor("x", datatype, (2, 3), data=json_values(expected)))
    decoded = decode_request(body, None)
    assert decoded.input_datatypes == {"x": datatype}
    assert_same(decoded.inputs["x"], expected)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_input_decodes_to_declared_dtype_and_shape(datatype: str) -> None:
    expected = sample(datatype)
    sent = triton.InferInput("x", [2, 3], datatype).set_data_from_numpy(expected)
    decoded = from_client([sent])
    assert_same(decoded.inputs["x"], expected)
    assert not decoded.inputs["x"].flags.writeable or datatype == "BYTES"


@pytest.mark.parametrize("datatype", DATATYPES)
def test_client_json_input_decodes(datatype: str) -> None:
    expected = sample(datatype)
    sent = triton.InferInput("x", [2, 3], datatype)
    sent.set_data_from_numpy(expected, binary_data=False)
    assert_same(from_client([sent]).inputs["x"], expected)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_client_parses_encoded_output(datatype: str, binary: bool) -> None:
    expected = sample(datatype)
    result = client_result({"y": expected}, None, binary)
    assert result.get_output("y")["datatype"] == datatype
    got = result.as_numpy("y")
    if datatype == "BYTES" and not binary:
        assert got.tolist() == [[v.decode() for v in row] for row in expected.tolist()]
    else:
        assert_same(got, expected)


def test_nested_json_data_is_flattened() -> None:
    body = request(
        tensor("a", "INT32", (2, 2), data=[[1, 2], [3, 4]]),
        tensor("b", "BYTES", (2, 1), data=[["p"], ["q"]]),
        tensor("c", "FP32", (4,), data=[[1, 2], [3, 4]]),
    )
    inputs = decode_request(body, None).inputs
    assert_same(inputs["a"], np.array([[1, 2], [3, 4]], np.int32))
    assert_same(inputs["b"], np.array([[b"p"], [b"q"]], object))
    assert_same(inputs["c"], np.array([1, 2, 3, 4], np.float32))


@given(
    st.sampled_from(["FP32", "FP64"]),
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.floats(-1e300, 1e300),
            st.integers(-(2**63), 2**64 - 1),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_flat_float_data_decodes_as_numpy_would(datatype: str, data: list[Any]) -> None:
    """The fast path (``struct``) for flat FP32/FP64 lists agrees with the general one."""
    body = request(tensor("x", datatype, (len(data),), data=data))
    if all(isinstance(v, bool) for v in data):
        with pytest.raises(InvalidRequest, match="must be numbers"):
            decode_request(body, None)
        return
    dtype = np.float32 if datatype == "FP32" else np.float64
    with np.errstate(over="ignore"):
        expected = np.asarray(data).astype(dtype)
    if np.isinf(expected).any():  # past FP32's range: refused, not made infinite
        with pytest.raises(InvalidRequest, match="is out of range for FP32"):
            decode_request(body, None)
        return
    assert_same(decode_request(body, None).inputs["x"], expected)


def test_json_accepts_integral_floats_for_integers_and_ints_for_floats() -> None:
    body = request(
        tensor("a", "INT8", data=[1.0, -2.0]),
        tensor("b", "FP64", data=[1, 2**64 - 1]),
        tensor("c", "UINT64", data=[1.0, 2**64 - 1]),
        tensor("d", "INT64", data=[2.0, -(2**63)]),
    )
    inputs = decode_request(body, None).inputs
    assert_same(inputs["a"], np.array([1, -2], np.int8))
    assert_same(inputs["b"], np.array([1, 2**64 - 1], np.float64))
    assert_same(inputs["c"], np.array([1, 2**64 - 1], np.uint64))
    assert_same(inputs["d"], np.array([2, -(2**63)], np.int64))


def test_empty_tensors_round_trip() -> None:
    body, size = binary_request(
        tensor("a", "FP32", (0, 3), parameters={"binary_data_size": 0}),
        tensor("b", "INT64", (0,), data=[]),
        tensor("c", "BYTES", (0,), parameters={"binary_data_size": 0}),
        payload=b"",
    )
    inputs = decode_request(body, size).inputs
    assert inputs["a"].shape == (0, 3)
    assert inputs["b"].dtype == np.int64
    assert inputs["c"].shape == (0,)
    result = client_result(inputs, None, True)
    assert result.as_numpy("a").shape == (0, 3)


def test_request_fields_are_decoded() -> None:
    body = request(
        tensor(data=[1, 2]),
        id="req-7",
        parameters={"binary_data_output": True, "priority": 2},
        outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        model_name="ignored",
    )
    decoded = decode_request(body, None)
    assert decoded.id == "req-7"
    assert decoded.parameters == {"binary_data_output": True, "priority": 2}
    assert decoded.binary_output_default is True
    assert decoded.outputs == [
        RequestedOutput("y", False, {"binary_data": False}),
        RequestedOutput("z", None, {}),
    ]


def test_request_defaults() -> None:
    decoded = decode_request(request(tensor(data=[1, 2]), outputs=[]), None)
    assert (decoded.id, decoded.parameters, decoded.outputs) == (None, {}, None)
    assert decoded.binary_output_default is False


def test_client_output_options_are_decoded() -> None:
    sent = triton.InferInput("x", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32))
    outputs = [triton.InferRequestedOutput("a"), triton.InferRequestedOutput("b", False)]
    decoded = from_client([sent], outputs)
    assert [(o.name, o.binary) for o in decoded.outputs or []] == [("a", True), ("b", False)]
    assert from_client([sent]).binary_output_default is True


def test_client_classification_is_rejected() -> None:
    sent = triton.InferInput("x", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32))
    with pytest.raises(InvalidRequest, match="output 'a': the classification extension"):
        from_client([sent], [triton.InferRequestedOutput("a", class_count=3)])


def test_client_request_with_several_binary_inputs() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([b"one", b"two"], dtype=object)
    c = np.array([True, False])
    inputs = [
        triton.InferInput("a", [3, 4], "FP32").set_data_from_numpy(a),
        triton.InferInput("b", [2], "BYTES").set_data_from_numpy(b),
        triton.InferInput("c", [2], "BOOL").set_data_from_numpy(c, binary_data=False),
    ]
    decoded = from_client(inputs)
    assert_same(decoded.inputs["a"], a)
    assert_same(decoded.inputs["b"], b)
    assert_same(decoded.inputs["c"], c)


# --- zero copy ------------------------------------------------------------------------------


def test_binary_input_is_a_view_of_the_body() -> None:
    payload = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    body, size = binary_request(
        tensor("x", "FP32", (1024, 1024), parameters={"binary_data_size": payload.nbytes}),
        payload=payload.tobytes(),
    )
    array = decode_request(body, size).inputs["x"]
    assert np.shares_memory(array, np.frombuffer(body, np.uint8))
    np.testing.assert_array_equal(array, payload)


def test_binary_output_is_a_view_of_the_array() -> None:
    array = np.arange(1 << 20, dtype=np.float32)
    chunks, _ = encode_response(InferResponse("m", None, None, {"y": array}), None, True)
    assert len(chunks[1]) == array.nbytes
    assert np.shares_memory(np.frombuffer(chunks[1], np.uint8), array)


# --- encoding -------------------------------------------------------------------------------


def test_response_envelope() -> None:
    response = InferResponse(
        "m", "2", "req-1", {"y": np.array([1.5], np.float32)}, parameters={"k": np.int64(3)}
    )
    chunks, header_length = encode_response(response, None, False)
    assert header_length is None
    assert content_type(header_length) == "application/json"
    assert orjson.loads(join(chunks)) == {
        "model_name": "m",
        "model_version": "2",
        "id": "req-1",
        "parameters": {"k": 3},
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.5]}],
    }


def test_response_omits_absent_fields_and_sets_header_length() -> None:
    chunks, header_length = encode_response(
        InferResponse("m", None, None, {"y": np.zeros((2, 2), np.int16)}), None, True
    )
    header = orjson.loads(chunks[0])
    assert header_length == len(chunks[0])
    assert content_type(header_length) == "application/octet-stream"
    assert header == {
        "model_name": "m",
        "outputs": [
            {
                "name": "y",
                "datatype": "INT16",
                "shape": [2, 2],
                "parameters": {"binary_data_size": 8},
            }
        ],
    }


def test_requested_outputs_pick_order_and_format() -> None:
    outputs = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.int8), "c": np.ones(1)}
    requested = [RequestedOutput("c", None), RequestedOutput("a", False)]
    chunks, header_length = encode_response(
        InferResponse("m", None, None, outputs), requested, True
    )
    header = orjson.loads(chunks[0])
    assert [o["name"] for o in header["outputs"]] == ["c", "a"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == [1.0, 1.0]
    assert len(chunks) == 2
    result = triton.InferResult.from_response_body(join(chunks), header_length=header_length)
    assert_same(result.as_numpy("c"), np.ones(1))


def test_unknown_requested_output_lists_available_ones() -> None:
    response = InferResponse("m", None, None, {"a": np.ones(1), "b": np.ones(1)})
    with pytest.raises(InvalidRequest, match=r"'nope' is not produced.*'a', 'b'"):
        encode_response(response, [RequestedOutput("nope", None)], False)


def test_outputs_are_cast_to_declared_datatype() -> None:
    transposed = np.arange(6, dtype=np.float64).reshape(2, 3).T
    response = InferResponse("m", None, None, {"y": transposed}, {"y": "FP32"})
    for binary in (False, True):
        chunks, header_length = encode_response(response, None, binary)
        result = triton.InferResult.from_response_body(join(chunks), header_length=header_length)
        assert_same(result.as_numpy("y"), transposed.astype(np.float32))


def test_big_endian_and_list_outputs_are_written_little_endian() -> None:
    outputs: dict[str, Any] = {"be": np.arange(3, dtype=">i4"), "list": [[1.5, 2.5]]}
    for binary in (False, True):
        result = client_result(outputs, None, binary)
        assert_same(result.as_numpy("be"), np.arange(3, dtype=np.int32))
        assert_same(result.as_numpy("list"), np.array([[1.5, 2.5]]))


def test_output_dtype_mismatch_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="output 'y' is declared BYTES"):
        encode_response(
            InferResponse("m", None, None, {"y": np.ones(1)}, {"y": "BYTES"}), None, True
        )
    with pytest.raises(ModelError, match=r"output 'y'.*complex"):
        encode_response(InferResponse("m", None, None, {"y": np.ones(1, complex)}), None, True)


def test_string_outputs_are_bytes() -> None:
    outputs = {"u": np.array(["h\u00e9", "b"]), "o": np.array(["x", b"y", 3], object)}
    for binary in (False, True):
        result = client_result(outputs, None, binary)
        assert result.get_output("u")["datatype"] == "BYTES"
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("o").tolist()]
        assert got == ["x", "y", "3"]
        u = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("u").tolist()]
        assert u == ["h\u00e9", "b"]


def test_non_utf8_bytes_need_binary_output() -> None:
    response = InferResponse("m", None, None, {"y": np.array([b"\xff"], object)})
    with pytest.raises(InvalidRequest, match=r"output 'y'.*binary_data"):
        encode_response(response, None, False)
    chunks, _ = encode_response(response, None, True)
    assert chunks[1] == b"\x01\x00\x00\x00\xff"


NON_FINITE = [np.nan, 1.5, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_floats_are_written_as_triton_writes_them(dtype: type) -> None:
    # Literals, as Triton writes them and tritonclient reads them: null would lose which one
    # it was, and tritonclient could not turn it back into a float.
    expected = np.array([NON_FINITE, NON_FINITE[::-1]], dtype=dtype)
    chunks, _ = encode_response(InferResponse("m", None, None, {"y": expected}), None, False)
    assert b'"data":[NaN,1.5,Infinity,-Infinity,-Infinity,Infinity,1.5,NaN]' in chunks[0]
    assert_same(client_result({"y": expected}, None, False).as_numpy("y"), expected)


def test_non_finite_floats_from_tritonclient_json_decode() -> None:
    expected = np.array([NON_FINITE], dtype=np.float32)
    sent = triton.InferInput("x", [1, 4], "FP32")
    sent.set_data_from_numpy(expected, binary_data=False)  # the client writes NaN, Infinity
    assert_same(from_client([sent]).inputs["x"], expected)


def test_integers_past_int64_are_numbers_for_float_inputs() -> None:
    decoded = decode_request(request(tensor("x", "FP64", (3,), data=[2**64 - 1, -1, 2])), None)
    np.testing.assert_array_equal(decoded.inputs["x"], [2.0**64, -1.0, 2.0])


# --- decoding errors ------------------------------------------------------------------------

X = "input 'x': "
BAD_JSON_DATA = [
    (tensor("x", "FP32", (2, 16), data=[0.0] * 30), "shape [2, 16] needs 32 elements, got 30"),
    (
        tensor("x", "FP32", (2, 2), data=[[1, 2], [3]]),
        "'data' must be a flat list or evenly nested lists",
    ),
    (tensor(data=5), "'data' must be a list, got 5"),
    (tensor("x", "INT32", data=[1, 1.5]), "INT32 data must be integers, got 1.5"),
    (tensor("x", "UINT8", data=[1, 300]), "value 300 is out of range for UINT8 [0, 255]"),
    (tensor("x", "INT8", data=[-129, 0]), "value -129 is out of range for INT8 [-128, 127]"),
    (tensor("x", "UINT64", data=[-1, 0]), f"value -1 is out of range for UINT64 [0, {2**64 - 1}]"),
    (
        tensor("x", "INT64", data=[0, 2**63]),
        f"value {2**63} is out of range for INT64 [{-(2**63)}, ",
    ),
    (
        tensor("x", "INT64", data=[-1, 2**63]),
        f"value {2**63} is out of range for INT64 [{-(2**63)}, ",
    ),
    (tensor("x", "UINT32", data=[1.0, 2**64]), f"value {2**64} is out of range for "),
    (tensor("x", "UINT64", data=[1, 2**64]), f"value {2**64} is out of range for "),
    (tensor("x", "INT32", data=["1", 2]), "INT32 data must be integers, got '1'"),
    (tensor("x", "INT32", data=[True, False]), "INT32 data must be integers, got True"),
    (tensor("x", "FP32", data=[None, 1.0]), "FP32 data must be numbers, got None"),
    (tensor("x", "FP16", data=[1.0, "a"]), "FP16 data must be numbers, got 'a'"),
    (tensor("x", "FP64", data=[True, False]), "FP64 data must be numbers, got True"),
    (
        tensor("x", "FP32", data=[1.0, 1e39]),
        "value 1e+39 is out of range for FP32 (largest finite 3.40282e+38); send Infinity",
    ),
    (tensor("x", "FP16", data=[70000, 1]), "value 70000 is out of range for FP16 (largest "),
    (tensor("x", "FP16", data=[2**70, 1]), f"value {2.0**70} is out of range for FP16"),
    (tensor("x", "BOOL", data=[1, 0]), "BOOL data must be true or false, got 1"),
    (tensor("x", "BYTES", data=["a", 5]), "BYTES data must be strings, got 5"),
    (tensor("x", "BYTES", (3,), data=["a", "b"]), "shape [3] needs 3 elements, got 2"),
]


@pytest.mark.parametrize(("item", "message"), BAD_JSON_DATA)
def test_bad_json_data_is_rejected(item: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(item), None)
    assert caught.value.message.startswith(X + message)
    assert caught.value.status_code == 400


BAD_INPUTS = [
    (tensor("x", "FP33", data=[1, 2]), X + "datatype 'FP33' is not a v2 datatype"),
    (tensor("x", None, data=[1, 2]), X + "datatype None is not a v2 datatype"),
    (tensor("x", shape=[2, -1], data=[1, 2]), X + "'shape' must be a list of non-negative"),
    (tensor("x", shape=[True], data=[1]), X + "'shape' must be a list"),
    (tensor("x", shape=[2.0], data=[1, 2]), X + "'shape' must be a list"),
    (tensor("x", shape="2", data=[1, 2]), X + "'shape' must be a list"),
    (tensor("x", shape=None, data=[1, 2]), X + "'shape' must be a list"),
    (tensor(), X + "needs 'data' or parameters.binary_data_size"),
    (tensor(data=[1, 2], parameters={"binary_data_size": 8}), X + "give either 'data'"),
    (tensor(data=[1, 2], parameters=[1]), X[:-2] + " 'parameters' must be an object"),
    (tensor(parameters={"shared_memory_region": "r"}), X + "the shared memory extension"),
    (tensor(parameters={"binary_data_size": -1}), X + "binary_data_size must be a non-negative"),
    (tensor(parameters={"binary_data_size": "8"}), X + "binary_data_size must be a non-negative"),
    (tensor(parameters={"binary_data_size": 8}), X + "parameters.binary_data_size is set but"),
    ({"datatype": "FP32", "shape": [1], "data": [1]}, "inputs[0]: 'name' must be a non-empty"),
    (tensor(""), "inputs[0]: 'name' must be a non-empty string"),
    ([1], "inputs[0] must be an object"),
]


@pytest.mark.parametrize(("item", "message"), BAD_INPUTS)
def test_bad_input_is_rejected(item: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(item), None)
    assert caught.value.message.startswith(message)


BAD_REQUESTS = [
    (b'{"inputs": [1,2,}', "malformed JSON at char 16 (line 1, column 17): "),
    (b"", "malformed JSON at char 0"),
    # Broken elsewhere: the NaN fallback does not hide orjson's precise message.
    (b'{"inputs": [NaN,}', "malformed JSON at char 16 (line 1, column 17): "),
    (b"[1]", "the request must be a JSON object, got list"),
    (b"{}", "'inputs' must be a non-empty list"),
    (b'{"inputs": []}', "'inputs' must be a non-empty list"),
    (b'{"inputs": {"name": "x"}}', "'inputs' must be a non-empty list"),
    (request(tensor(data=[1, 2]), tensor(data=[3, 4])), "input 'x' appears more than once"),
    (request(tensor(data=[1, 2]), parameters=[1]), "request 'parameters' must be an object"),
    (
        request(tensor(data=[1, 2]), parameters={"binary_data_output": 1}),
        "request parameters.binary_data_output must be true or false, got 1",
    ),
    (request(tensor(data=[1, 2]), id=7), "'id' must be a string, got 7"),
    (request(tensor(data=[1, 2]), outputs={"name": "y"}), "'outputs' must be a list"),
    (request(tensor(data=[1, 2]), outputs=["y"]), "outputs[0] must be an object"),
    (request(tensor(data=[1, 2]), outputs=[{"name": 3}]), "outputs[0]: 'name' must be"),
    (
        request(tensor(data=[1, 2]), outputs=[{"name": "y", "parameters": {"binary_data": 1}}]),
        "output 'y' parameters.binary_data must be true or false",
    ),
    (
        request(tensor(data=[1, 2]), outputs=[{"name": "y", "parameters": 1}]),
        "output 'y' 'parameters' must be an object",
    ),
    (
        request(tensor(data=[1, 2]), outputs=[{"name": "y", "parameters": {"classification": 2}}]),
        "output 'y': the classification extension is not supported",
    ),
    (
        request(tensor(data=[1, 2]), outputs=[{"name": "y"}, {"name": "y"}]),
        "output 'y' appears more than once",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_request_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, None)
    assert caught.value.message.startswith(message)


def fp32(name: str, shape: Any, size: int) -> Any:
    return tensor(name, "FP32", shape, parameters={"binary_data_size": size})


def strings(name: str, shape: Any, size: int) -> Any:
    return tensor(name, "BYTES", shape, parameters={"binary_data_size": size})


BAD_BINARY = [
    ([fp32("x", (2, 2), 12)], b"\0" * 12, "input 'x': shape [2, 2] of FP32 needs 16 bytes, "),
    ([fp32("x", (2,), 8)], b"\0" * 4, "input 'x': binary_data_size is 8 but only 4 bytes"),
    ([fp32("x", (1,), 4), fp32("y", (1,), 4)], b"\0" * 6, "input 'y': binary_data_size is 4"),
    ([fp32("x", (1,), 4)], b"\0" * 6, "2 bytes of binary data left over"),
    ([strings("x", (2,), 6)], b"\1\0\0\0a\0", "input 'x': BYTES binary data ends after 1 of 2"),
    ([strings("x", (1,), 6)], b"\x09\0\0\0ab", "input 'x': BYTES element 0 claims 9 bytes"),
    ([strings("x", (1,), 7)], b"\1\0\0\0abc", "input 'x': 2 bytes left over after 1 BYTES"),
    (
        [tensor("x", "BOOL", (2,), parameters={"binary_data_size": 2})],
        b"\1\2",
        "input 'x': BOOL binary data must hold only bytes 0 and 1",
    ),
]


@pytest.mark.parametrize(("inputs", "payload", "message"), BAD_BINARY)
def test_bad_binary_data_is_rejected(inputs: list[Any], payload: bytes, message: str) -> None:
    body, size = binary_request(*inputs, payload=payload)
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, size)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize("header_length", [-1, 1000])
def test_header_length_outside_body_is_rejected(header_length: int) -> None:
    body = request(tensor(data=[1, 2]))
    with pytest.raises(InvalidRequest, match=f"Inference-Header-Content-Length is {header_length}"):
        decode_request(body, header_length)


def test_input_arguments_are_accepted_as_any_buffer() -> None:
    body, size = binary_request(fp32("x", (1,), 4), payload=np.float32(2).tobytes())
    for buffer in (bytearray(body), memoryview(body)):
        assert decode_request(buffer, size).inputs["x"].tolist() == [2.0]


# --- property: what encode writes, decode reads back -----------------------------------------


def as_request(chunks: list[bytes | memoryview]) -> tuple[bytes, int]:
    """Turn a response into the request that sends its outputs back as inputs."""
    header = orjson.loads(chunks[0])
    new_header = orjson.dumps({"inputs": header["outputs"]})
    return new_header + join(chunks[1:]), len(new_header)


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn, finite: bool) -> NDArray[Any]:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(shapes)
    if datatype == "BYTES":
        text = st.text(max_size=5).map(str.encode) if finite else st.binary(max_size=5)
        return draw(hnp.arrays(object, shape, elements=text))
    elements = {"allow_nan": False, "allow_infinity": False} if finite else None
    return draw(hnp.arrays(NUMERIC[datatype], shape, elements=elements))


@settings(max_examples=200, deadline=None)
@given(st.lists(tensors(finite=False), min_size=1, max_size=3))
def test_binary_encode_decode_round_trip(arrays: list[NDArray[Any]]) -> None:
    outputs = {f"t{i}": a for i, a in enumerate(arrays)}
    chunks, _ = encode_response(InferResponse("m", None, None, outputs), None, True)
    decoded = decode_request(*as_request(chunks)).inputs
    for name, array in outputs.items():
        assert decoded[name].shape == array.shape
        if array.dtype == object:
            assert decoded[name].tolist() == array.tolist()
        else:
            np.testing.assert_array_equal(decoded[name], array, strict=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(tensors(finite=True), min_size=1, max_size=3))
def test_json_encode_decode_round_trip(arrays: list[NDArray[Any]]) -> None:
    outputs = {f"t{i}": a for i, a in enumerate(arrays)}
    chunks, header_length = encode_response(InferResponse("m", None, None, outputs), None, False)
    assert header_length is None and len(chunks) == 1
    decoded = decode_request(orjson.dumps({"inputs": orjson.loads(chunks[0])["outputs"]}), None)
    for name, array in outputs.items():
        assert_same(decoded.inputs[name], array)
