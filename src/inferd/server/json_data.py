"""Tensor data in JSON: the ``data`` field of v2 inputs and outputs.

Inputs go through ``np.asarray`` once and are then checked for what a cast would hide (floats
into integer types, out-of-range values, strings or nulls); outputs stay numpy arrays, which
orjson writes directly with ``OPT_SERIALIZE_NUMPY``.

NaN and the infinities travel as the literals ``NaN``, ``Infinity`` and ``-Infinity``, as Triton
reads and writes them (since 22.02) and tritonclient sends them: not strict JSON, but what
Python's ``json`` and rapidjson read. Strict JSON has no way to carry them; ``null`` would lose
which one it was, and tritonclient cannot turn it back into a float.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from inferd.errors import InvalidRequest
from inferd.server.binary import WIRE_DTYPES


def _orjson_writes(dtype: np.dtype[Any]) -> bool:
    try:
        orjson.dumps(np.zeros(1, dtype=dtype), option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return False
    return True


# orjson < 3.10 cannot write FP16, and no version writes non-native byte order.
_ORJSON_DATATYPES: Final = frozenset(n for n, dt in WIRE_DTYPES.items() if _orjson_writes(dt))


def array_from_json(name: str, datatype: str, shape: list[int], data: Any) -> NDArray[Any]:
    """Input ``name``'s JSON ``data`` (flat or nested) as an array of ``datatype`` in ``shape``."""
    if not isinstance(data, list):
        raise InvalidRequest(f"input {name!r}: 'data' must be a list, got {data!r}")
    count = math.prod(shape)
    if datatype == "BYTES":
        return _json_bytes(name, shape, count, data)
    packed = _packed_floats(datatype, count, data)
    if packed is not None:
        return packed.reshape(shape)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidRequest(
            f"input {name!r}: 'data' must be a flat list or evenly nested lists"
        ) from None
    if raw.size != count:
        raise InvalidRequest(
            f"input {name!r}: shape {shape} needs {count} elements, got {raw.size}"
        )
    if count:
        raw = _checked(name, datatype, raw, data)
    return raw.astype(WIRE_DTYPES[datatype], copy=False).reshape(shape)


_STRUCT_CODES: Final = {"FP32": "f", "FP64": "d"}


def _packed_floats(datatype: str, count: int, data: list[Any]) -> NDArray[Any] | None:
    """A flat list of numbers as FP32/FP64, through ``struct``: about 2x faster than
    ``np.asarray`` (one C loop, no float64 array in between), for the common request.

    None sends anything else to the general path, which names what is wrong: a nested list, a
    wrong count, a value out of range, a non-number. A list of bools is sent there too (its
    first element says so): ``struct`` would read them as 0 and 1, the general path refuses.
    """
    code = _STRUCT_CODES.get(datatype)
    if code is None or not count or len(data) != count or type(data[0]) is bool:
        return None
    out = np.empty(count, dtype=WIRE_DTYPES[datatype])  # writable, as np.asarray's would be
    try:
        struct.pack_into(f"<{count}{code}", out.data, 0, *data)
    except (struct.error, OverflowError, TypeError):
        return None
    return out


def _checked(name: str, datatype: str, raw: NDArray[Any], data: list[Any]) -> NDArray[Any]:
    """Reject JSON values that ``astype`` would silently truncate, wrap or parse."""
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            _reject_element(name, datatype, data, "true or false", _is_bool)
    elif datatype.startswith("FP"):
        if kind not in "iuf":
            raw = _as_floats(name, datatype, data)
        _check_float_range(name, datatype, raw)
    elif kind in "iu":
        _check_range(name, datatype, raw.min().item(), raw.max().item())
    elif kind == "f":
        return _exact_integers(name, datatype, data)
    else:
        _reject_element(name, datatype, data, "integers", _is_integer)
    return raw


def _check_range(name: str, datatype: str, low: int | float, high: int | float) -> None:
    info = np.iinfo(WIRE_DTYPES[datatype])
    if low < info.min or high > info.max:
        value = low if low < info.min else high
        raise InvalidRequest(
            f"input {name!r}: value {value} is out of range for {datatype} [{info.min}, {info.max}]"
        )


def _as_floats(name: str, datatype: str, data: list[Any]) -> NDArray[Any]:
    # np.asarray made objects: a non-number, or numbers it could not type together (integers
    # past int64's range beside negative ones, say), which are fine for a float input.
    values = list(_flatten(data))
    if not all(map(_is_number, values)):
        _reject_element(name, datatype, values, "numbers", _is_number)
    try:
        return np.array([float(v) for v in values])
    except OverflowError:
        raise InvalidRequest(
            f"input {name!r}: an integer in 'data' is out of range for {datatype}"
        ) from None


def _check_float_range(name: str, datatype: str, raw: NDArray[Any]) -> None:
    # A finite value that the cast rounds to infinity is one nobody sent.
    dtype = WIRE_DTYPES[datatype]
    if raw.dtype.itemsize <= dtype.itemsize and raw.dtype.kind == "f":
        return  # float64 into FP64: nothing to round
    with np.errstate(over="ignore"):
        overflow = np.isinf(raw.astype(dtype)) & np.isfinite(raw)
    if overflow.any():
        value = raw.reshape(-1)[np.flatnonzero(overflow)[0]].item()
        raise InvalidRequest(
            f"input {name!r}: value {value} is out of range for {datatype} (largest finite "
            f"{float(np.finfo(dtype).max):g}); send Infinity to mean infinity"
        )


def _exact_integers(name: str, datatype: str, data: list[Any]) -> NDArray[Any]:
    # np.asarray read floats: 1.0 (fine, JSON does not tell it from 1), 1.5 (not an integer),
    # or ints mixed past int64's range, which float64 would round. Redo it exactly, in Python.
    values = []
    for value in _flatten(data):
        if isinstance(value, float) and not value.is_integer():
            raise InvalidRequest(f"input {name!r}: {datatype} data must be integers, got {value}")
        values.append(int(value))
    _check_range(name, datatype, min(values), max(values))
    return np.array(values, dtype=WIRE_DTYPES[datatype])


def _reject_element(
    name: str, datatype: str, data: list[Any], expected: str, accepts: Callable[[Any], bool]
) -> None:
    found = next((v for v in _flatten(data) if not accepts(v)), None)
    raise InvalidRequest(f"input {name!r}: {datatype} data must be {expected}, got {found!r}")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a JSON true is never a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_bytes(name: str, shape: list[int], count: int, data: list[Any]) -> NDArray[np.object_]:
    flat = list(_flatten(data)) if any(type(v) is list for v in data) else data
    if len(flat) != count:
        raise InvalidRequest(
            f"input {name!r}: shape {shape} needs {count} elements, got {len(flat)}"
        )
    out = np.empty(count, dtype=object)
    try:
        out[:] = [v.encode() for v in flat]
    except (AttributeError, UnicodeEncodeError):
        found = next((v for v in flat if not isinstance(v, str)), None)
        problem = "strings" if found is not None else "encodable as UTF-8"
        raise InvalidRequest(
            f"input {name!r}: BYTES data must be {problem}, got {found!r}"
        ) from None
    return out.reshape(shape)


def _flatten(data: list[Any]) -> Iterator[Any]:
    for value in data:
        if type(value) is list:
            yield from _flatten(value)
        else:
            yield value


def json_from_array(name: str, array: NDArray[Any], datatype: str) -> Any:
    """Output ``name``'s flat JSON ``data``; numeric arrays are left for orjson to write."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _with_non_finite(array, datatype)
    if datatype in _ORJSON_DATATYPES:
        return array.reshape(-1)
    if datatype != "BYTES":
        return array.reshape(-1).tolist()
    values = array.reshape(-1).tolist()
    if array.dtype.kind == "U":
        return values
    try:
        return [_as_text(v) for v in values]
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"output {name!r} holds bytes that are not valid UTF-8; "
            "request it with parameters.binary_data = true"
        ) from None


def _with_non_finite(array: NDArray[Any], datatype: str) -> orjson.Fragment:
    """The flat data with NaN and infinities as literals (see the module docstring): orjson
    writes the finite values, which are then spliced around the literals."""
    flat = array.reshape(-1)
    finite = np.isfinite(flat)
    filled = np.where(finite, flat, 0)
    if datatype not in _ORJSON_DATATYPES:  # FP16 with an old orjson
        filled = filled.astype(np.float64)
    items = orjson.dumps(filled, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    for index in np.flatnonzero(~finite):
        value = flat[index]
        items[index] = b"NaN" if np.isnan(value) else b"Infinity" if value > 0 else b"-Infinity"
    return orjson.Fragment(b"[" + b",".join(items) + b"]")


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else str(value)
