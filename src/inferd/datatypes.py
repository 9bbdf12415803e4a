"""The Open Inference Protocol's tensor datatypes and their numpy equivalents.

BYTES tensors are numpy object arrays whose elements are ``bytes``.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from inferd.errors import InvalidRequest

_TO_NUMPY: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_FROM_NUMPY: Final[dict[np.dtype, str]] = {v: k for k, v in _TO_NUMPY.items()}

DATATYPES: Final[frozenset[str]] = frozenset(_TO_NUMPY)


def to_numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype name; ``InvalidRequest`` for an unknown name."""
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        known = ", ".join(sorted(DATATYPES))
        raise InvalidRequest(f"unknown datatype {datatype!r}; expected one of {known}") from None


def from_numpy_dtype(dtype: np.dtype) -> str:
    """The v2 datatype name of a numpy dtype (strings and bytes map to BYTES)."""
    found = _FROM_NUMPY.get(np.dtype(dtype).newbyteorder("="))
    if found is not None:
        return found
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    raise InvalidRequest(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def element_size(datatype: str) -> int:
    """Bytes per element in the binary encoding; 0 for BYTES, whose elements vary in size."""
    return 0 if datatype == "BYTES" else to_numpy_dtype(datatype).itemsize
