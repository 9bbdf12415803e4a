"""Columns to model inputs: the mapping rules, and rows that fail alone."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.config import TensorSpec
from inferd.errors import ConfigError
from inferd.jobs.columns import resolve, to_tensors
from inferd.jobs.readers import RowBatch, object_column

VECTOR = (TensorSpec("input", "FP32", (-1, 3)),)


def batch(
    columns: dict[str, np.ndarray], start: int = 0, bad: dict[int, str] | None = None
) -> RowBatch:
    rows = len(next(iter(columns.values())))
    return RowBatch(start, rows, columns, bad or {})


def test_a_column_named_like_the_input_is_taken_as_it_is() -> None:
    head = {"id": np.arange(2), "input": np.ones((2, 3)), "other": np.zeros(2)}
    mapping = resolve(VECTOR, head, {}, None)
    assert mapping.sources[0].columns == ("input",) and mapping.sources[0].kind == "tensor"
    assert mapping.id_name == "id"  # a column named id is passed through by default
    tensors, bad = to_tensors(mapping, batch(head))
    assert tensors["input"].dtype == np.float32 and tensors["input"].shape == (2, 3)
    assert bad == {}


def test_a_single_input_takes_every_numeric_column_but_the_id() -> None:
    head = {"id": np.array([7, 8]), "a": np.array([1.0, 2.0]), "name": object_column(["x", "y"]),
            "b": np.array([3, 4]), "c": np.array([5.0, 6.0])}  # fmt: skip
    mapping = resolve(VECTOR, head, {}, None)
    assert mapping.sources[0].columns == ("a", "b", "c")
    tensors, _ = to_tensors(mapping, batch(head))
    assert tensors["input"].tolist() == [[1, 3, 5], [2, 4, 6]]


def test_without_an_id_column_rows_are_named_by_index() -> None:
    head = {"a": np.array([1.0]), "b": np.array([2.0]), "c": np.array([3.0])}
    assert resolve(VECTOR, head, {}, None).id_name == "row"


def test_input_flag_picks_and_orders_the_columns() -> None:
    head = {"a": np.array([1.0]), "b": np.array([2.0]), "c": np.array([3.0]), "d": np.array([4.0])}
    mapping = resolve(VECTOR, head, {"input": ("d", "a", "b")}, None)
    tensors, _ = to_tensors(mapping, batch(head))
    assert tensors["input"].tolist() == [[4, 1, 2]]


@pytest.mark.parametrize(
    ("head", "overrides", "id_column", "message"),
    [
        ({"a": np.zeros(1)}, {}, "key", "--id-column key: no such column"),
        ({"a": np.zeros(1)}, {"x": ("a",)}, None, "--input x=...: the model has no input 'x'"),
        ({"a": np.zeros(1)}, {"input": ("zz",)}, None, "no column 'zz'"),
        ({"a": np.zeros(1), "b": np.zeros(1)}, {}, None, "2 values per row"),
        ({"s": object_column(["x"])}, {}, None, "no numeric column"),
    ],
)
def test_mapping_mistakes_name_the_flag_and_the_columns(
    head: dict[str, np.ndarray], overrides: dict[str, tuple[str, ...]], id_column: str | None,
    message: str,
) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(VECTOR, head, overrides, id_column)


def test_two_inputs_need_their_columns_named() -> None:
    inputs = (TensorSpec("x", "FP32", (-1, 2)), TensorSpec("y", "INT64", (-1,)))
    head = {"x": np.zeros((1, 2)), "q": np.zeros(1)}
    with pytest.raises(ConfigError, match="input 'y': no column named 'y'"):
        resolve(inputs, head, {}, None)
    mapping = resolve(inputs, head, {"y": ("q",)}, None)
    tensors, _ = to_tensors(mapping, batch(head))
    assert tensors["y"].dtype == np.int64 and tensors["y"].shape == (1,)


def test_a_ragged_row_fails_alone_and_reads_as_zeros() -> None:
    rows = object_column([[1, 2, 3], [1, 2], [4, 5, 6]])
    mapping = resolve(VECTOR, {"input": rows}, {}, None)
    tensors, bad = to_tensors(mapping, batch({"input": rows}))
    assert list(bad) == [1] and "shape [2]" in bad[1] and "takes [3]" in bad[1]
    assert tensors["input"].tolist() == [[1, 2, 3], [0, 0, 0], [4, 5, 6]]


def test_text_cells_that_are_not_numbers_fail_their_row() -> None:
    head = {c: object_column([str(i) for i in range(20)]) for c in "abc"}
    head["b"] = object_column(["1", "oops", *(str(i) for i in range(18))])
    mapping = resolve(VECTOR, head, {}, None)
    assert mapping.sources[0].columns == ("a", "b", "c")  # one bad cell keeps b numeric
    tensors, bad = to_tensors(mapping, batch(head))
    assert bad == {1: "column 'b': 'oops' is not a number"}
    assert tensors["input"][2].tolist() == [2, 0, 2]


def test_rows_the_reader_could_not_read_keep_their_reason() -> None:
    head = {"input": object_column([[1, 2, 3], None])}
    mapping = resolve(VECTOR, head, {}, None)
    _, bad = to_tensors(mapping, batch(head, bad={1: "not valid JSON"}))
    assert bad == {1: "not valid JSON"}


def test_a_missing_column_fails_each_row_of_the_chunk() -> None:
    mapping = resolve(VECTOR, {"input": np.zeros((1, 3)), "id": np.zeros(1)}, {}, None)
    _, bad = to_tensors(mapping, batch({"id": np.arange(2)}))
    assert sorted(bad) == [0, 1] and "no value" in bad[0]


def test_strings_feed_a_bytes_input() -> None:
    inputs = (TensorSpec("text", "BYTES", (-1,)),)
    head = {"text": object_column(["héllo", 3])}
    tensors, bad = to_tensors(resolve(inputs, head, {}, None), batch(head))
    assert tensors["text"][0] == "héllo".encode() and list(bad) == [1]
