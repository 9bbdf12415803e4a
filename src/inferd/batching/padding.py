"""Batching inputs with a variable dimension: pad to the batch's longest, then cut the outputs back.

A model declares some non-batch axes as variable (``-1`` at axis ``k >= 1``, e.g. a sequence
length). Requests that differ only along those axes stack together: each variable axis is padded
at its end to the longest length in the batch (``pad_value``; ``b""`` for BYTES), and the batch
is concatenated along axis 0 in the same single copy.

Outputs are cut back by a convention: an output's variable axis ``k`` (declared ``-1``,
``k >= 1``) is sliced to the request's original length along axis ``k`` of the input it
*follows*. ``follows[output]`` names that input; by default (``resolve_follows``) it is the first
input, in declaration order, with a variable axis ``k``. So a sequence model whose output has one
position per input position gets each request's outputs back at its own length. Padding goes at
the end, so a model whose position ``j`` depends only on positions ``<= j`` (causal) answers
each request exactly as it would alone.

Pure functions: numpy only, no I/O. The returned per-request outputs are views of the batch's.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from inferd.errors import ModelError

Tensors = dict[str, np.ndarray]
Axes = Mapping[str, tuple[int, ...]]


def pad_key(inputs: Mapping[str, np.ndarray], variable: Axes) -> Hashable:
    """Stacking key when padding: dtype and non-batch dims, variable axes left out (``-1``)."""
    return tuple(
        (name, a.dtype.str, _masked_dims(a.shape, _axes(name, a, variable)))
        for name, a in inputs.items()
    )


def pad_and_stack(
    requests: Sequence[Mapping[str, np.ndarray]], variable: Axes, pad_value: float = 0
) -> tuple[Tensors, list[dict[str, tuple[int, ...]]]]:
    """Pad each variable axis to the batch's longest and concatenate along axis 0.

    Returns the batch and, per request, the original shape of each input that has variable
    axes (``original[i][name][k]`` is request ``i``'s length along axis ``k``), for ``unpad``.
    The requests must share a ``pad_key``.
    """
    names = list(requests[0])
    original = [{n: r[n].shape for n in names if _axes(n, r[n], variable)} for r in requests]
    if len(requests) == 1:
        return dict(requests[0]), original  # nothing to pad against, nothing to copy
    batch = {n: _stack([r[n] for r in requests], variable.get(n, ()), pad_value) for n in names}
    return batch, original


def unpad(
    outputs: Mapping[str, np.ndarray],
    rows: Sequence[int],
    original: Sequence[Mapping[str, tuple[int, ...]]],
    output_variable: Axes,
    follows: Mapping[str, str],
) -> list[Tensors]:
    """Split the batch's outputs per request (by ``rows``) and cut variable axes back (views).

    Axis ``k`` of an output listed in ``output_variable`` is sliced to request ``i``'s original
    length along axis ``k`` of input ``follows[output]`` (complete it with ``resolve_follows``).
    """
    answers: list[Tensors] = []
    start = 0
    for count, shapes in zip(rows, original, strict=True):
        answer: Tensors = {}
        for name, array in outputs.items():
            cut = [slice(start, start + count)]
            for k in sorted(output_variable.get(name, ())):
                cut += [slice(None)] * (k - len(cut)) + [_length(name, array, k, follows, shapes)]
            answer[name] = array[tuple(cut)]
        answers.append(answer)
        start += count
    return answers


def resolve_follows(
    variable: Axes, output_variable: Axes, declared: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``follows`` completed by the convention: the first input with a variable axis ``k``.

    Call once per model (``variable`` in input declaration order). Raises ``ValueError`` for an
    output whose variable axes no single input has.
    """
    follows = dict(declared or {})
    for output, axes in output_variable.items():
        if not axes or output in follows:
            continue
        candidates = [name for name, have in variable.items() if set(axes) <= set(have)]
        if not candidates:
            raise ValueError(
                f"output {output!r}: no input has variable axes {axes}; name the input it follows"
            )
        follows[output] = candidates[0]
    return follows


def _axes(name: str, array: np.ndarray, variable: Axes) -> tuple[int, ...]:
    axes = variable.get(name, ())
    for k in axes:
        if not 1 <= k < array.ndim:
            raise ValueError(
                f"input {name!r}: variable axis {k} is not a non-batch axis of a "
                f"{array.ndim}-d array"
            )
    return axes


def _masked_dims(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-1 if k in axes else d for k, d in enumerate(shape) if k >= 1)


def _stack(arrays: list[np.ndarray], axes: tuple[int, ...], pad_value: float) -> np.ndarray:
    if not axes:
        return np.concatenate(arrays)
    first = arrays[0]
    shape = list(first.shape)
    shape[0] = sum(a.shape[0] for a in arrays)
    for k in axes:
        shape[k] = max(a.shape[k] for a in arrays)
    out = np.empty(shape, dtype=first.dtype)
    fill = _pad_fill(first.dtype, pad_value)
    start = 0
    for a in arrays:
        block = out[start : start + a.shape[0]]
        if a.shape[1:] != block.shape[1:]:
            block.fill(fill)  # only a padded request's block is written twice
        block[tuple(slice(0, d) for d in a.shape)] = a
        start += a.shape[0]
    return out


def _pad_fill(dtype: np.dtype, pad_value: float) -> object:
    # np.full(..., 0) on a bytes or str array would write "0", and None in a BYTES tensor
    # would break its encoding: strings pad with the empty string.
    if dtype.kind in "OS":
        return b""
    if dtype.kind == "U":
        return ""
    return pad_value


def _length(
    output: str,
    array: np.ndarray,
    k: int,
    follows: Mapping[str, str],
    shapes: Mapping[str, tuple[int, ...]],
) -> slice:
    source = follows.get(output)
    if source is None or source not in shapes or k >= len(shapes[source]):
        raise ValueError(f"output {output!r}: axis {k} follows no input's variable axis {k}")
    length = shapes[source][k]
    if k >= array.ndim or array.shape[k] < length:
        got = "no such axis" if k >= array.ndim else f"length {array.shape[k]}"
        raise ModelError(
            f"output {output!r} has {got} along axis {k}; it follows input {source!r}, "
            f"so it needs at least the batch's padded length"
        )
    return slice(0, length)
