"""The prepared signature check agrees with the full one: same batch size, same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.config import BatchingConfig, ModelConfig, TensorSpec
from inferd.errors import InvalidRequest
from inferd.signature import SignatureCheck, check_inputs

CONFIG = ModelConfig(
    name="m",
    path=Path("."),
    backend="python",
    inputs=(TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "INT64", (-1, -1, 2))),
    outputs=(TensorSpec("y", "FP32", (-1,)),),
    batching=BatchingConfig(max_batch_size=8),
)

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@given(
    st.fixed_dictionaries({}, optional={"a": shapes, "b": shapes, "c": shapes}),
    st.sampled_from(["FP32", "INT64", "FP64"]),
)
def test_prepared_check_matches_the_full_check(
    request_shapes: dict[str, tuple[int, ...]], datatype: str
) -> None:
    inputs = {name: np.zeros(shape, np.float32) for name, shape in request_shapes.items()}
    datatypes = {name: datatype for name in inputs}
    try:
        expected: int | str = check_inputs(CONFIG, inputs, datatypes)
    except InvalidRequest as e:
        expected = e.message
    try:
        got: int | str = SignatureCheck(CONFIG).rows(inputs, datatypes)
    except InvalidRequest as e:
        got = e.message
    assert got == expected


def test_valid_request_gives_its_batch_size() -> None:
    inputs = {"a": np.zeros((3, 4), np.float32), "b": np.zeros((3, 7, 2), np.int64)}
    assert SignatureCheck(CONFIG).rows(inputs, {"a": "FP32", "b": "INT64"}) == 3
    with pytest.raises(InvalidRequest, match="disagree on the batch size"):
        SignatureCheck(CONFIG).rows(
            {"a": inputs["a"], "b": np.zeros((2, 7, 2), np.int64)}, {"a": "FP32", "b": "INT64"}
        )
