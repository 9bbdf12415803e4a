"""The report's measures: agreement, output differences, the evaluation data, the timings."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.backends.base import Tensors
from inferd.config import TensorSpec
from inferd.optimize.report import (
    Accuracy,
    EvaluationData,
    OptimizationReport,
    Predict,
    Timing,
    abs_diff,
    agreement,
    compare,
    evaluation_data,
    time_batches,
)

DIGITS_IN = (TensorSpec("input", "FP32", (-1, 64)),)


def test_agreement_is_the_fraction_of_equal_argmax() -> None:
    original = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    optimized = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])
    assert agreement(original, optimized) == 0.75
    assert agreement(original, original) == 1.0


def test_agreement_refuses_outputs_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes"):
        agreement(np.zeros((3, 10)), np.zeros((4, 10)))


def test_abs_diff_over_every_float_output() -> None:
    original = {"a": np.array([1.0, 2.0], np.float32), "ids": np.array([1, 2])}
    optimized = {"a": np.array([1.5, 2.0], np.float32), "ids": np.array([7, 9])}
    largest, mean = abs_diff(original, optimized)
    assert largest == 0.5
    assert mean == 0.25  # integer outputs are not compared


def _scores(x: np.ndarray) -> np.ndarray:
    """A 'classifier' whose class is the column (of 10) holding the row's largest pixel."""
    return x[:, :10].astype(np.float32)


def test_compare_on_digits_measures_agreement_and_both_accuracies() -> None:
    data = evaluation_data(DIGITS_IN, batched=True)
    assert data.labels is not None and "held-out digits" in data.description
    x = data.inputs["input"]

    def noisy(inputs: Tensors) -> Tensors:
        scores = _scores(inputs["input"]).copy()
        scores[0] = -scores[0]  # changes the class of row 0 only (unless the row is flat)
        return {"logits": scores}

    accuracy = compare(lambda inputs: {"logits": _scores(inputs["input"])}, noisy, data)
    expected = np.mean(_scores(x).argmax(1) == noisy({"input": x})["logits"].argmax(1))
    assert accuracy.agreement == pytest.approx(expected)
    assert accuracy.original_accuracy == pytest.approx(np.mean(_scores(x).argmax(1) == data.labels))
    assert accuracy.max_abs_diff == pytest.approx(2 * float(np.abs(_scores(x)[0]).max()))


def test_compare_on_other_models_reports_differences_only() -> None:
    specs = (TensorSpec("a", "FP32", (-1, 3, -1)), TensorSpec("n", "INT64", (-1,)))
    data = evaluation_data(specs, batched=True)
    assert data.labels is None
    assert data.inputs["a"].shape == (64, 3, 8) and data.inputs["n"].dtype == np.int64
    accuracy = compare(
        lambda inputs: {"y": inputs["a"]}, lambda inputs: {"y": inputs["a"] + 0.5}, data
    )
    assert accuracy.agreement is None
    assert accuracy.max_abs_diff == pytest.approx(0.5)
    assert accuracy.mean_abs_diff == pytest.approx(0.5)


def test_random_inputs_are_seeded() -> None:
    specs = (TensorSpec("a", "FP32", (-1, 4)),)
    first = evaluation_data(specs, batched=True).inputs["a"]
    np.testing.assert_array_equal(first, evaluation_data(specs, batched=True).inputs["a"])


def test_inputs_without_random_values_are_refused() -> None:
    with pytest.raises(ValueError, match="BYTES"):
        evaluation_data((TensorSpec("text", "BYTES", (-1,)),), batched=True)


def test_timings_at_batch_1_and_64_run_both_models_alike() -> None:
    rows: dict[str, list[int]] = {"original": [], "optimized": []}

    def model(name: str) -> Predict:
        def predict(inputs: Tensors) -> Tensors:
            rows[name].append(len(inputs["input"]))
            return {"y": inputs["input"]}

        return predict

    data = EvaluationData({"input": np.zeros((100, 4), np.float32)}, "zeros")
    timings = time_batches(model("original"), model("optimized"), data, True, repeats=3)
    assert [t.batch for t in timings] == [1, 64]
    assert rows["original"] == rows["optimized"]
    assert sorted(set(rows["original"])) == [1, 64]
    assert all(t.original_ms >= 0 and t.optimized_ms >= 0 for t in timings)


def test_an_unbatched_model_is_timed_at_its_one_shape() -> None:
    data = EvaluationData({"input": np.zeros((3, 4), np.float32)}, "zeros")
    (timing,) = time_batches(lambda i: i, lambda i: i, data, batched=False, repeats=2)
    assert timing.batch == 0


def test_report_text_names_size_speed_and_accuracy() -> None:
    report = OptimizationReport(
        "digits", "torch", "int8", "dynamic int8 quantization of 2 linear layers",
        size_before=40_000, size_after=10_000,
        timings=(Timing(1, 2.0, 1.0), Timing(64, 8.0, 2.0)),
        accuracy=Accuracy("450 held-out digits", 0.1, 0.01, 0.995, 0.97, 0.968),
    )  # fmt: skip
    text = report.to_text()
    assert "40.0 kB -> 10.0 kB (0.25x)" in text
    assert "batch 1: 2.000 ms -> 1.000 ms (2.00x)" in text
    assert "batch 64: 8.000 ms -> 2.000 ms (4.00x)" in text
    assert "agreement 99.50% with fp32 on 450 held-out digits" in text
    assert "accuracy 0.9700 -> 0.9680" in text
    line = report.one_line()
    assert "\n" not in line
    assert "model 'digits' at int8" in line and "4.00x at batch 64" in line


def test_held_out_digits_are_cached_and_a_broken_cache_is_replaced() -> None:
    from inferd.config import cache_dir
    from inferd.demo.data import held_out_digits as split
    from inferd.optimize.digits import held_out_digits

    expected_x, expected_y = split()
    first = held_out_digits()
    assert first is not None
    (cached,) = (cache_dir() / "optimize").glob("held_out_digits-sklearn*.npz")
    cached.write_bytes(b"not a zip file")
    second = held_out_digits()
    assert second is not None
    for x, y in (first, second):
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(y, expected_y)
    with np.load(cached) as saved:  # rewritten whole
        np.testing.assert_array_equal(saved["y"], expected_y)
