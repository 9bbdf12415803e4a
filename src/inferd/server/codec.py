"""Decode Open Inference Protocol (KServe v2) infer requests and encode their responses.

This runs on every request, so it avoids per-element Python work wherever numpy can do it:
binary inputs are zero-copy views of the body, JSON inputs are converted by ``np.asarray``
and numeric JSON outputs are written by orjson straight from the array.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from inferd.datatypes import DATATYPES, from_numpy_dtype
from inferd.errors import InvalidRequest, ModelError
from inferd.server.binary import (
    WIRE_DTYPES,
    BinaryReader,
    bytes_from_buffer,
    numeric_chunk,
    numeric_from_buffer,
    serialize_bytes,
)
from inferd.server.json_data import array_from_json, json_from_array

JSON_CONTENT_TYPE: Final = "application/json"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

_DUMPS_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
_STRINGY: Final = frozenset("OSU")
_DATATYPE_LIST: Final = ", ".join(sorted(DATATYPES))
_DATATYPE_OF: Final = {dtype: name for name, dtype in WIRE_DTYPES.items()}


@dataclass(slots=True)
class RequestedOutput:
    """One entry of the request's ``outputs`` list."""

    name: str
    binary: bool | None
    """``parameters.binary_data``; None defers to the request's ``binary_data_output``."""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded infer request: inputs as numpy arrays in their declared shapes."""

    id: str | None
    inputs: dict[str, NDArray[Any]]
    input_datatypes: dict[str, str]
    parameters: dict[str, Any]
    outputs: list[RequestedOutput] | None
    """None: return every output the model produces."""
    binary_output_default: bool


@dataclass(slots=True)
class InferResponse:
    """What a model produced for one request, ready to be encoded."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, NDArray[Any]]
    output_datatypes: dict[str, str] | None = None
    """Declared datatypes; arrays of another dtype are cast. None: from each array's dtype."""
    parameters: dict[str, Any] | None = None


# --- decoding -------------------------------------------------------------------------------


def decode_request(body: bytes | bytearray | memoryview, header_length: int | None) -> InferRequest:
    """Decode a v2 infer request; ``header_length`` is Inference-Header-Content-Length."""
    view = memoryview(body)
    if header_length is not None and not 0 <= header_length <= len(view):
        raise InvalidRequest(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes"
        )
    doc = _parse_json(view if header_length is None else view[:header_length])
    parameters = _parameters(doc.get("parameters"), "request")
    binary_default = _optional_bool(parameters, "binary_data_output", "request")
    reader = BinaryReader(view, header_length)
    inputs, datatypes = _decode_inputs(doc.get("inputs"), reader)
    reader.finish()
    # Positional: keyword arguments make this call twice as slow.
    return InferRequest(
        _request_id(doc.get("id")),
        inputs,
        datatypes,
        parameters,
        _requested_outputs(doc.get("outputs")),
        bool(binary_default),
    )


def _parse_json(header: memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        doc = _with_non_finite_literals(header)
        if doc is None:
            raise _malformed(exc) from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"the request must be a JSON object, got {type(doc).__name__}")
    return doc


def _with_non_finite_literals(header: memoryview) -> Any:
    """The document read by Python's ``json``, which reads NaN, Infinity and -Infinity
    (tritonclient writes them for non-finite floats, and Triton reads them), if it has any;
    else None. It runs only after orjson failed, off the hot path."""
    raw = bytes(header)
    if b"NaN" not in raw and b"Infinity" not in raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _malformed(exc) from None  # its position, not orjson's stop at the literal
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None


def _malformed(exc: orjson.JSONDecodeError | json.JSONDecodeError) -> InvalidRequest:
    return InvalidRequest(
        f"malformed JSON at char {exc.pos} (line {exc.lineno}, column {exc.colno}): {exc.msg}"
    )


def _parameters(raw: Any, kind: str, name: str | None = None) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        where = kind if name is None else f"{kind} {name!r}"
        raise InvalidRequest(f"{where} 'parameters' must be an object, got {raw!r}")
    return raw


def _optional_bool(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{where} parameters.{key} must be true or false, got {value!r}")
    return value


def _request_id(raw: Any) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise InvalidRequest(f"'id' must be a string, got {raw!r}")
    return raw


def _decode_inputs(
    raw: Any, reader: BinaryReader
) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'inputs' must be a non-empty list")
    inputs: dict[str, NDArray[Any]] = {}
    datatypes: dict[str, str] = {}
    for index, item in enumerate(raw):
        name, datatype, array = _decode_input(item, index, reader)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} appears more than once in 'inputs'")
        inputs[name] = array
        datatypes[name] = datatype
    return inputs, datatypes


def _decode_input(item: Any, index: int, reader: BinaryReader) -> tuple[str, str, NDArray[Any]]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"inputs[{index}] must be an object, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{index}]: 'name' must be a non-empty string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidRequest(
            f"input {name!r}: datatype {datatype!r} is not a v2 datatype "
            f"(expected one of {_DATATYPE_LIST})"
        )
    shape = _shape(item.get("shape"), name)
    parameters = _parameters(item.get("parameters"), "input", name)
    size = _binary_size(parameters, name, has_data="data" in item)
    if size is not None:
        if datatype == "BYTES":
            return name, datatype, bytes_from_buffer(reader, name, shape, size)
        return name, datatype, numeric_from_buffer(reader, name, datatype, shape, size)
    return name, datatype, array_from_json(name, datatype, shape, item["data"])


def _shape(shape: Any, name: str) -> list[int]:
    if type(shape) is list:
        for dim in shape:
            if type(dim) is not int or dim < 0:
                break
        else:
            return shape
    raise InvalidRequest(
        f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}"
    )


def _binary_size(parameters: dict[str, Any], name: str, has_data: bool) -> int | None:
    if "shared_memory_region" in parameters:
        raise InvalidRequest(f"input {name!r}: the shared memory extension is not supported")
    size = parameters.get("binary_data_size")
    if size is None:
        if not has_data:
            raise InvalidRequest(f"input {name!r}: needs 'data' or parameters.binary_data_size")
        return None
    if has_data:
        raise InvalidRequest(
            f"input {name!r}: give either 'data' or parameters.binary_data_size, not both"
        )
    if type(size) is not int or size < 0:
        raise InvalidRequest(
            f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}"
        )
    return size


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest(f"'outputs' must be a list, got {raw!r}")
    requested = [_requested_output(item, index) for index, item in enumerate(raw)]
    names = [r.name for r in requested]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InvalidRequest(f"output {duplicate!r} appears more than once in 'outputs'")
    return requested


def _requested_output(item: Any, index: int) -> RequestedOutput:
    if not isinstance(item, dict):
        raise InvalidRequest(f"outputs[{index}] must be an object, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"outputs[{index}]: 'name' must be a non-empty string")
    parameters = _parameters(item.get("parameters"), "output", name)
    if parameters.get("classification"):
        raise InvalidRequest(f"output {name!r}: the classification extension is not supported")
    if "shared_memory_region" in parameters:
        raise InvalidRequest(f"output {name!r}: the shared memory extension is not supported")
    binary = _optional_bool(parameters, "binary_data", f"output {name!r}")
    return RequestedOutput(name=name, binary=binary, parameters=parameters)


# --- encoding -------------------------------------------------------------------------------


def encode_response(
    response: InferResponse, requested: list[RequestedOutput] | None, binary_default: bool
) -> tuple[list[bytes | memoryview], int | None]:
    """Encode a v2 infer response as body chunks plus the JSON header's length.

    The chunks are the JSON header followed by one chunk per binary output, in output order;
    every chunk's ``len()`` is its byte size. The header length is None when no output is
    binary (the body is pure JSON), else the value for Inference-Header-Content-Length.
    """
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, binary in _selected_outputs(response.outputs, requested, binary_default):
        array, datatype = _prepared_output(response, name)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = _binary_data(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = json_from_array(name, array, datatype)
        entries.append(entry)
    header = orjson.dumps(
        _envelope(response, entries), default=_json_default, option=_DUMPS_OPTIONS
    )
    return [header, *chunks], (len(header) if chunks else None)


def content_type(header_length: int | None) -> str:
    """The response Content-Type for ``encode_response``'s header length."""
    return JSON_CONTENT_TYPE if header_length is None else BINARY_CONTENT_TYPE


def _selected_outputs(
    outputs: dict[str, NDArray[Any]], requested: list[RequestedOutput] | None, default: bool
) -> list[tuple[str, bool]]:
    if requested is None:
        return [(name, default) for name in outputs]
    for r in requested:
        if r.name not in outputs:
            available = ", ".join(repr(n) for n in outputs)
            raise InvalidRequest(
                f"requested output {r.name!r} is not produced by the model; "
                f"available outputs: {available}"
            )
    return [(r.name, default if r.binary is None else r.binary) for r in requested]


def _prepared_output(response: InferResponse, name: str) -> tuple[NDArray[Any], str]:
    """The output as a C-contiguous array of its wire dtype, and its datatype."""
    array = np.asarray(response.outputs[name])
    declared = (response.output_datatypes or {}).get(name)
    datatype = declared or _DATATYPE_OF.get(array.dtype) or _datatype_of(name, array)
    stringy = array.dtype.kind in _STRINGY
    if datatype not in DATATYPES or stringy != (datatype == "BYTES"):
        raise ModelError(
            f"output {name!r} is declared {datatype} but the model returned dtype {array.dtype}"
        )
    if stringy:
        return array, datatype
    return np.asarray(array, dtype=WIRE_DTYPES[datatype], order="C"), datatype


def _datatype_of(name: str, array: NDArray[Any]) -> str:
    try:
        return from_numpy_dtype(array.dtype)
    except InvalidRequest as exc:
        raise ModelError(f"output {name!r}: {exc.message}") from None


def _binary_data(array: NDArray[Any], datatype: str) -> bytes | memoryview:
    if datatype == "BYTES":
        return serialize_bytes(array)
    return numeric_chunk(array)


def _envelope(response: InferResponse, entries: list[dict[str, Any]]) -> dict[str, Any]:
    envelope: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        envelope["model_version"] = response.model_version
    if response.id is not None:
        envelope["id"] = response.id
    if response.parameters:
        envelope["parameters"] = response.parameters
    envelope["outputs"] = entries
    return envelope


def _json_default(value: Any) -> Any:
    # Model-supplied response parameters may hold numpy values orjson cannot write as is.
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")
