"""Padding variable axes to batch requests, and cutting the outputs back: each request gets
exactly what it would get alone, from a fake causal sequence model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferd.batching.padding import pad_and_stack, pad_key, resolve_follows, unpad
from inferd.errors import ModelError

Tensors = dict[str, np.ndarray]


def prefix_sums(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A causal model: position j sees only positions <= j, so end padding changes nothing."""
    for k in axes:
        x = np.cumsum(x, axis=k)
    return x


def serve(
    requests: list[Tensors],
    variable: dict[str, tuple[int, ...]],
    model: dict[str, tuple[str, tuple[int, ...]]],
    follows: dict[str, str] | None = None,
) -> list[Tensors]:
    """Pad, run ``model`` (output -> (input, prefix-summed axes)) on the batch, unpad."""
    batch, original = pad_and_stack(requests, variable)
    outputs = {out: prefix_sums(batch[src], axes) for out, (src, axes) in model.items()}
    output_variable = {out: axes for out, (_, axes) in model.items()}
    resolved = resolve_follows(variable, output_variable, follows)
    rows = [len(next(iter(r.values()))) for r in requests]
    return unpad(outputs, rows, original, output_variable, resolved)


def alone(request: Tensors, model: dict[str, tuple[str, tuple[int, ...]]]) -> Tensors:
    return {out: prefix_sums(request[src], axes) for out, (src, axes) in model.items()}


def assert_same(got: list[Tensors], want: list[Tensors]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for name in w:
            assert g[name].shape == w[name].shape, name
            np.testing.assert_array_equal(g[name], w[name])


def test_round_trip_gives_each_request_its_own_answer() -> None:
    rng = np.random.default_rng(0)
    requests = [{"x": rng.normal(size=(rows, length)).astype(np.float32)}
                for rows, length in [(2, 5), (1, 9), (3, 1)]]  # fmt: skip
    model = {"y": ("x", (1,))}
    got = serve(requests, {"x": (1,)}, model)
    assert_same(got, [alone(r, model) for r in requests])


def test_batch_is_padded_to_the_longest_with_the_pad_value() -> None:
    requests = [{"x": np.ones((1, 2), np.int64)}, {"x": np.full((2, 4), 7, np.int64)}]
    batch, original = pad_and_stack(requests, {"x": (1,)}, pad_value=-1)
    np.testing.assert_array_equal(batch["x"], [[1, 1, -1, -1], [7, 7, 7, 7], [7, 7, 7, 7]])
    assert original == [{"x": (1, 2)}, {"x": (2, 4)}]


def test_outputs_are_views_of_the_batch() -> None:
    requests = [{"x": np.ones((1, 3))}, {"x": np.ones((2, 5))}]
    batch, original = pad_and_stack(requests, {"x": (1,)})
    outputs = {"y": batch["x"] * 2}
    answers = unpad(outputs, [1, 2], original, {"y": (1,)}, {"y": "x"})
    assert all(np.shares_memory(a["y"], outputs["y"]) for a in answers)
    assert [a["y"].shape for a in answers] == [(1, 3), (2, 5)]


def test_a_single_request_is_not_copied() -> None:
    x = np.ones((2, 3))
    batch, _ = pad_and_stack([{"x": x}], {"x": (1,)})
    assert batch["x"] is x


def test_multiple_inputs_fixed_and_variable() -> None:
    rng = np.random.default_rng(1)
    requests = [
        {"tokens": rng.integers(0, 9, (rows, length)), "features": rng.normal(size=(rows, 4))}
        for rows, length in [(1, 3), (2, 6), (1, 2)]
    ]
    model = {"hidden": ("tokens", (1,)), "pooled": ("features", ())}
    got = serve(requests, {"tokens": (1,)}, model)
    assert_same(got, [alone(r, model) for r in requests])


def test_outputs_follow_different_inputs() -> None:
    rng = np.random.default_rng(2)
    requests = [
        {"query": rng.normal(size=(1, q)), "doc": rng.normal(size=(1, d))}
        for q, d in [(2, 7), (5, 3), (4, 4)]
    ]
    model = {"q_out": ("query", (1,)), "d_out": ("doc", (1,))}
    variable = {"query": (1,), "doc": (1,)}
    # By default both outputs would follow "query", the first input with a variable axis 1.
    got = serve(requests, variable, model, follows={"d_out": "doc"})
    assert_same(got, [alone(r, model) for r in requests])


def test_two_variable_axes() -> None:
    rng = np.random.default_rng(3)
    requests = [{"image": rng.normal(size=(rows, h, w, 3))}
                for rows, h, w in [(1, 4, 6), (2, 7, 2), (1, 1, 1)]]  # fmt: skip
    model = {"map": ("image", (1, 2))}
    got = serve(requests, {"image": (1, 2)}, model)
    assert_same(got, [alone(r, model) for r in requests])


def test_bytes_pad_with_the_empty_string() -> None:
    requests = [
        {"text": np.array([[b"a", b"b", b"c"]], dtype=object)},
        {"text": np.array([[b"x"], [b"yz"]], dtype=object)},
    ]
    batch, _ = pad_and_stack(requests, {"text": (1,)})
    assert batch["text"].tolist() == [[b"a", b"b", b"c"], [b"x", b"", b""], [b"yz", b"", b""]]
    model = {"joined": ("text", (1,))}  # cumsum of bytes is running concatenation: causal
    got = serve(requests, {"text": (1,)}, model)
    assert got[1]["joined"].tolist() == [[b"x"], [b"yz"]]
    assert_same(got, [alone(r, model) for r in requests])


def test_pad_key_ignores_variable_lengths_only() -> None:
    variable = {"x": (1,)}
    a = pad_key({"x": np.zeros((1, 3, 4), np.float32)}, variable)
    assert a == pad_key({"x": np.zeros((5, 9, 4), np.float32)}, variable)
    assert a != pad_key({"x": np.zeros((1, 3, 5), np.float32)}, variable)  # fixed axis differs
    assert a != pad_key({"x": np.zeros((1, 3, 4), np.float64)}, variable)  # dtype differs
    assert a != pad_key({"x": np.zeros((1, 3, 4), np.float32)}, {})  # padding off: exact dims


def test_variable_axis_must_be_a_non_batch_axis() -> None:
    with pytest.raises(ValueError, match="axis 0"):
        pad_key({"x": np.zeros((1, 3))}, {"x": (0,)})
    with pytest.raises(ValueError, match="axis 2"):
        pad_and_stack([{"x": np.zeros((1, 3))}] * 2, {"x": (2,)})


def test_resolve_follows_by_convention() -> None:
    variable = {"mask": (1,), "tokens": (1,), "image": (1, 2)}
    follows = resolve_follows(variable, {"a": (1,), "b": (1, 2), "c": ()}, {"a": "tokens"})
    assert follows == {"a": "tokens", "b": "image"}
    with pytest.raises(ValueError, match="no input"):
        resolve_follows({"x": (1,)}, {"y": (2,)})


def test_an_output_shorter_than_the_padding_is_the_models_error() -> None:
    requests = [{"x": np.ones((1, 2))}, {"x": np.ones((1, 5))}]
    batch, original = pad_and_stack(requests, {"x": (1,)})
    with pytest.raises(ModelError, match="axis 1"):
        unpad({"y": batch["x"][:, :3]}, [1, 1], original, {"y": (1,)}, {"y": "x"})


shapes = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(shapes, st.sampled_from([(1,), (2,), (1, 2)]), st.sampled_from(["int32", "float64"]))
def test_round_trip_for_any_lengths(
    sizes: list[tuple[int, int, int]], axes: tuple[int, ...], dtype: str
) -> None:
    rng = np.random.default_rng(len(sizes))
    fixed = {k: 3 for k in (1, 2) if k not in axes}  # non-variable axes share one length
    requests = []
    for rows, n1, n2 in sizes:
        shape = (rows, fixed.get(1, n1), fixed.get(2, n2))
        requests.append({"x": rng.integers(-50, 50, shape).astype(dtype),
                         "w": rng.integers(0, 9, (rows, 2)).astype(dtype)})  # fmt: skip
    model = {"y": ("x", axes), "v": ("w", ())}
    got = serve(requests, {"x": axes}, model)
    assert_same(got, [alone(r, model) for r in requests])
    assert len({pad_key(r, {"x": axes}) for r in requests}) == 1
