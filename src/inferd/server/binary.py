"""Triton's binary tensor data extension: raw tensor bytes after the JSON header.

Numeric tensors are little-endian, row-major and unpadded; BOOL is one byte (0 or 1) per element;
a BYTES element is a 4-byte little-endian unsigned length followed by that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from inferd.datatypes import DATATYPES, to_numpy_dtype
from inferd.errors import InvalidRequest

_LENGTH: Final = struct.Struct("<I")

WIRE_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    name: to_numpy_dtype(name).newbyteorder("<") for name in DATATYPES if name != "BYTES"
}
"""The little-endian numpy dtype of every numeric v2 datatype (BYTES has none)."""


class BinaryReader:
    """Hands out consecutive slices of a request's binary section, one per binary input."""

    __slots__ = ("_end", "_offset", "view")

    def __init__(self, view: memoryview, start: int | None) -> None:
        self.view = view
        self._offset = start
        self._end = len(view)

    def take(self, name: str, size: int) -> int:
        """Reserve ``size`` bytes for input ``name``; returns their offset in the body."""
        offset = self._offset
        if offset is None:
            raise InvalidRequest(
                f"input {name!r}: parameters.binary_data_size is set but the request has no "
                "binary section (send the Inference-Header-Content-Length header)"
            )
        if offset + size > self._end:
            raise InvalidRequest(
                f"input {name!r}: binary_data_size is {size} but only "
                f"{self._end - offset} bytes of binary data remain"
            )
        self._offset = offset + size
        return offset

    def finish(self) -> None:
        """Fail if binary data is left over once every input took its share."""
        if self._offset is not None and self._offset != self._end:
            raise InvalidRequest(
                f"{self._end - self._offset} bytes of binary data left over after the last "
                "binary input (binary_data_size values do not add up to the binary section)"
            )


def numeric_from_buffer(
    reader: BinaryReader, name: str, datatype: str, shape: list[int], size: int
) -> NDArray[Any]:
    """A read-only, zero-copy view of one numeric input's bytes, in its declared shape."""
    dtype = WIRE_DTYPES[datatype]
    count = _count(shape)
    expected = count * dtype.itemsize
    if size != expected:
        raise InvalidRequest(
            f"input {name!r}: shape {shape} of {datatype} needs {expected} bytes, "
            f"binary_data_size is {size}"
        )
    offset = reader.take(name, size)
    array = np.frombuffer(reader.view, dtype=dtype, count=count, offset=offset)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise InvalidRequest(f"input {name!r}: BOOL binary data must hold only bytes 0 and 1")
    return array.reshape(shape)


def bytes_from_buffer(
    reader: BinaryReader, name: str, shape: list[int], size: int
) -> NDArray[np.object_]:
    """Length-prefixed BYTES elements as an object array of ``bytes``, in the declared shape."""
    view = reader.view
    pos = reader.take(name, size)
    end = pos + size
    count = _count(shape)
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidRequest(
                f"input {name!r}: BYTES binary data ends after {i} of {count} elements"
            )
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidRequest(
                f"input {name!r}: BYTES element {i} claims {length} bytes "
                f"but only {end - pos} remain"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidRequest(
            f"input {name!r}: {end - pos} bytes left over after {count} BYTES elements"
        )
    return out.reshape(shape)


def serialize_bytes(array: NDArray[Any]) -> bytes:
    """Length-prefix and concatenate a BYTES array's elements (str is UTF-8 encoded)."""
    parts: list[bytes] = []
    append = parts.append
    pack = _LENGTH.pack
    for value in array.reshape(-1).tolist():
        item = _as_bytes(value)
        append(pack(len(item)))
        append(item)
    return b"".join(parts)


def numeric_chunk(array: NDArray[Any]) -> memoryview:
    """A flat byte view of a C-contiguous little-endian array: ``len()`` is its byte size."""
    flat: NDArray[np.uint8] = array.reshape(-1).view(np.uint8)
    return flat.data


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
