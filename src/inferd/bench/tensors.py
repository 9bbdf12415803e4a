"""KServe v2 infer requests: random tensors from a model's metadata, or bodies from a file;
sent as JSON or with Triton's binary tensor extension."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from inferd.bench.connection import Endpoint
from inferd.bench.protocols import (
    JSON_HEADERS,
    Payload,
    fetch_json,
    model_path,
    read_bodies,
)
from inferd.bench.spec import BenchSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import ConfigError, InferdError, NotFound

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def kserve_payload(spec: BenchSpec) -> Payload:
    """The run's infer requests: from ``spec.input_file``, else generated from the metadata."""
    endpoint = Endpoint.from_url(spec.url)
    if spec.input_file is not None:
        bodies = [_checked(spec.input_file, body) for body in read_bodies(spec.input_file)]
    else:
        metadata = _metadata(spec)
        bodies = [generated_body(spec, metadata)]
    path = model_path(spec, "/infer")
    requests = tuple(endpoint.request("POST", path, *encode(body, spec.binary)) for body in bodies)
    return Payload(requests, rows=rows_of(bodies[0]))


def _metadata(spec: BenchSpec) -> dict[str, Any]:
    try:
        return fetch_json(spec.url.rstrip("/") + model_path(spec), spec.timeout_s)
    except NotFound as e:
        raise NotFound(f"model {spec.model!r} has no metadata at {spec.url}: {e.message}") from None


def generated_body(spec: BenchSpec, metadata: dict[str, Any]) -> dict[str, Any]:
    """A request body with random data for every input the metadata declares."""
    inputs = metadata.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferdError(f"model {spec.model!r}: its metadata lists no inputs: {metadata}")
    rng = np.random.default_rng(spec.seed)
    shapes = dict(spec.shapes)
    unknown = set(shapes) - {tensor.get("name") for tensor in inputs}
    if unknown:
        raise ConfigError(f"bench: --shape names {sorted(unknown)}, not inputs of {spec.model!r}")
    tensors = [_random_tensor(t, spec.rows, shapes.get(t["name"]), rng) for t in inputs]
    return {"inputs": tensors}


def _random_tensor(
    declared: dict[str, Any], rows: int, shape: tuple[int, ...] | None, rng: np.random.Generator
) -> dict[str, Any]:
    """One input: the declared shape with a leading -1 set to ``rows`` and other -1s to 1."""
    if shape is None:
        dims = list(declared["shape"])
        shape = tuple((rows if i == 0 else 1) if d < 0 else int(d) for i, d in enumerate(dims))
    datatype = str(declared["datatype"])
    count = int(np.prod(shape, dtype=np.int64))
    return {
        "name": declared["name"],
        "shape": list(shape),
        "datatype": datatype,
        "data": _random_data(datatype, count, rng),
    }


def _random_data(datatype: str, count: int, rng: np.random.Generator) -> list[Any]:
    if datatype == "BYTES":
        return [_WORDS[i] for i in rng.integers(0, len(_WORDS), count)]
    if datatype == "BOOL":
        return [bool(b) for b in rng.random(count) < 0.5]
    if datatype.startswith("FP"):
        # Four decimals: bodies the size a real client sends, not 17 digits per float.
        return [float(x) for x in np.round(rng.random(count), 4)]
    return [int(i) for i in rng.integers(0, 10, count)]


def rows_of(body: dict[str, Any]) -> int:
    """Rows per request: the first dim of the first input (1 for a scalar)."""
    shape = body["inputs"][0].get("shape") or [1]
    return int(shape[0])


def _checked(path: str, body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ConfigError(f"bench: --input-file {path}: a KServe request body needs 'inputs'")
    for tensor in inputs:
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= tensor.keys():
            raise ConfigError(
                f"bench: --input-file {path}: every input needs name, shape and datatype"
            )
    return body


def encode(body: dict[str, Any], binary: bool) -> tuple[bytes, dict[str, str]]:
    """The HTTP body and headers of one request: JSON, or the binary tensor extension."""
    if not binary:
        return orjson.dumps(body), JSON_HEADERS
    header: dict[str, Any] = {**body, "inputs": []}
    header["parameters"] = {**body.get("parameters", {}), "binary_data_output": True}
    sections: list[bytes] = []
    for tensor in body["inputs"]:
        raw = _binary_section(tensor)
        entry = {k: v for k, v in tensor.items() if k != "data"}
        entry["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(raw)}
        header["inputs"].append(entry)
        sections.append(raw)
    head = orjson.dumps(header)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + b"".join(sections), headers


def _binary_section(tensor: dict[str, Any]) -> bytes:
    datatype = tensor["datatype"]
    if "data" not in tensor:
        raise ConfigError(f"bench: input {tensor['name']!r} has no 'data' to send as binary")
    if datatype == "BYTES":
        items = np.asarray(tensor["data"], dtype=object).ravel()
        encoded = [i if isinstance(i, bytes) else str(i).encode() for i in items]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    dtype = to_numpy_dtype(datatype).newbyteorder("<")
    return np.asarray(tensor["data"]).astype(dtype).ravel().tobytes()
