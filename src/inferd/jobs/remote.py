"""Running a job against a running inferd (``--url``): v2 infer requests, binary tensors.

Each request carries ``batch_size`` rows as raw tensor bytes after the JSON header (Triton's
binary tensor extension) and asks for binary outputs; a few requests are in flight at once.
HTTP statuses map back to inferd's exceptions, so the job treats a row the server rejected
(400, 500) like one the model rejected in-process, and a busy server (503, 504) like a busy
replica: it retries.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Final

import httpx
import numpy as np
import orjson

from inferd.batching.policy import split_rows
from inferd.config import TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import (
    ConfigError,
    InferdError,
    InvalidRequest,
    ModelError,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
)
from inferd.jobs.runner import CHUNK_TIMEOUT_S, Tensors

PARALLEL_REQUESTS: Final = 4
_LENGTH: Final = struct.Struct("<I")
_HEADER: Final = "Inference-Header-Content-Length"


class RemoteRunner:
    """A model served by inferd (or any v2 server with the binary extension) at ``url``."""

    def __init__(self, client: httpx.AsyncClient, name: str, metadata: dict[str, Any]) -> None:
        self._client = client
        self._name = name
        self._inputs = _specs(metadata, "inputs")
        self._outputs = _specs(metadata, "outputs")
        self._slots = asyncio.Semaphore(PARALLEL_REQUESTS)

    @classmethod
    async def connect(cls, url: str, name: str) -> RemoteRunner:
        """Read the model's signature from the server; ``ConfigError`` if it has no such model."""
        timeout = httpx.Timeout(CHUNK_TIMEOUT_S, connect=10.0)
        client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)
        try:
            response = await client.get(f"/v2/models/{name}")
        except httpx.HTTPError as e:
            await client.aclose()
            raise ConfigError(f"--url {url}: cannot reach the server: {e}") from None
        if response.status_code != 200:
            await client.aclose()
            raise ConfigError(f"--url {url}: model {name!r}: {_message(response)}")
        return cls(client, name, response.json())

    @property
    def name(self) -> str:
        return self._name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def replicas(self) -> int:
        return 1

    @property
    def preferred_batch_size(self) -> int:
        return 64

    @property
    def max_batch_bytes(self) -> int:
        return 32 << 20  # well under the server's default body limit (64 MiB)

    @property
    def fixed_batch_size(self) -> int | None:
        return None

    def reject(self, tensors: Tensors) -> dict[int, str]:
        """Nothing: the signature is checked per chunk, and a bad row fails when computed."""
        return {}

    async def infer(self, tensors: Tensors, batch_size: int) -> Tensors:
        """One request per ``batch_size`` rows, a few at a time, outputs joined in order."""
        rows = len(next(iter(tensors.values())))
        pieces = [{k: v[a:b] for k, v in tensors.items()} for a, b in split_rows(rows, batch_size)]
        answers = await asyncio.gather(*(self._post(piece) for piece in pieces))
        if len(answers) == 1:
            return answers[0]
        return {name: np.concatenate([a[name] for a in answers]) for name in answers[0]}

    async def _post(self, tensors: Tensors) -> Tensors:
        body, headers = encode_request(tensors, {s.name: s.datatype for s in self._inputs})
        async with self._slots:
            try:
                response = await self._client.post(
                    f"/v2/models/{self._name}/infer", content=body, headers=headers
                )
            except httpx.TimeoutException as e:
                raise RequestTimeout(f"no answer from the server: {e}") from None
            except httpx.TransportError as e:
                raise ModelNotReady(f"cannot reach the server: {e}") from None
        if response.status_code != 200:
            raise _error(response)
        return decode_response(response.content, response.headers.get(_HEADER))

    def cost(self, price_per_hour: float, seconds: float) -> float:
        """Price times the job's hours (the server's replicas are its own business)."""
        return price_per_hour * seconds / 3600.0

    async def close(self) -> None:
        await self._client.aclose()


def encode_request(tensors: Tensors, datatypes: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A binary v2 infer request body and its headers."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, array in tensors.items():
        raw = _raw(array, datatypes[name])
        chunks.append(raw)
        entries.append({"name": name, "shape": list(array.shape), "datatype": datatypes[name],
                        "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
    header = orjson.dumps({"inputs": entries, "parameters": {"binary_data_output": True}})
    headers = {"Content-Type": "application/octet-stream", _HEADER: str(len(header))}
    return b"".join([header, *chunks]), headers


def decode_response(body: bytes, header_length: str | None) -> Tensors:
    """The outputs of a v2 infer response, binary or JSON."""
    size = int(header_length) if header_length else len(body)
    header = orjson.loads(body[:size])
    offset, outputs = size, {}
    for entry in header["outputs"]:
        datatype, shape = entry["datatype"], entry["shape"]
        nbytes = (entry.get("parameters") or {}).get("binary_data_size")
        if nbytes is None:
            data = np.asarray(entry["data"], dtype=to_numpy_dtype(datatype))
            outputs[entry["name"]] = data.reshape(shape)
            continue
        raw = body[offset : offset + nbytes]
        offset += nbytes
        outputs[entry["name"]] = _from_raw(raw, datatype, shape)
    return outputs


def _raw(array: np.ndarray, datatype: str) -> bytes | memoryview:
    if datatype != "BYTES":
        wire = to_numpy_dtype(datatype).newbyteorder("<")
        return np.ascontiguousarray(array, dtype=wire).reshape(-1).view(np.uint8).data
    parts = []
    for item in array.reshape(-1).tolist():
        value = item if isinstance(item, bytes) else str(item).encode()
        parts += [_LENGTH.pack(len(value)), value]
    return b"".join(parts)


def _from_raw(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype != "BYTES":
        dtype = to_numpy_dtype(datatype).newbyteorder("<")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    items, pos = [], 0
    while pos < len(raw):
        (length,) = _LENGTH.unpack_from(raw, pos)
        items.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def _specs(metadata: dict[str, Any], key: str) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
        for t in metadata.get(key, [])
    )


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _error(response: httpx.Response) -> InferdError:
    """The exception a non-200 answer stands for."""
    message, status = _message(response), response.status_code
    if status == 413:
        return PayloadTooLarge(message)
    if status == 400:
        return InvalidRequest(message)
    if status == 503:
        retry = response.headers.get("Retry-After")
        return Overloaded(message, float(retry)) if retry else ModelNotReady(message)
    if status == 504:
        return RequestTimeout(message)
    if status == 404:
        return ConfigError(message)
    return ModelError(message)
