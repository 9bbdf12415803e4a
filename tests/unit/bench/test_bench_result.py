"""From samples to a ``BenchResult``: rates over the window, goodput, warnings; JSON both ways;
the table and the side-by-side comparison."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from inferd.bench import BenchResult, BenchSpec, format_comparison, format_result
from inferd.bench.protocols import Payload
from inferd.bench.result import build_result, load_result, save_result
from inferd.bench.samples import Samples
from inferd.errors import ConfigError

SPEC = BenchSpec(url="http://127.0.0.1:8000", model="echo", concurrency=4, slo_ms=10.0)
PAYLOAD = Payload((b"GET / HTTP/1.1\r\n\r\n",), rows=8)


def samples(
    latencies: list[float], start: float = 100.0, end: float = 102.0, **kw: object
) -> Samples:
    part = Samples(latencies_ms=latencies, window_start=start, window_end=end, wall_s=end - start)
    for key, value in kw.items():
        setattr(part, key, value)
    return part


def test_rates_are_over_the_measured_window() -> None:
    part = samples([5.0] * 150 + [20.0] * 50, errors=Counter({"http 503": 3}), cpu_s=0.5)
    result = build_result(SPEC, PAYLOAD, [part])
    assert result.duration_s == pytest.approx(2.0)
    assert result.num_ok == 200 and result.num_errors == 3
    assert result.errors == {"http 503": 3}
    assert result.throughput_rps == pytest.approx(100.0)
    assert result.goodput_rps == pytest.approx(75.0)  # 150 within 10 ms
    assert result.rows_per_s == pytest.approx(800.0)
    assert result.latency_ms["p50"] == 5.0 and result.latency_ms["max"] == 20.0
    assert result.generator_cpu == pytest.approx(0.25)
    assert result.ttft_ms is None and result.output_tokens_per_s is None
    assert result.warnings == ()


def test_processes_merge_into_one_window() -> None:
    a = samples([1.0] * 100, start=10.0, end=12.0, cpu_s=1.0)
    b = samples([3.0] * 300, start=10.5, end=14.0, cpu_s=0.5)
    result = build_result(SPEC, PAYLOAD, [a, b])
    assert result.duration_s == pytest.approx(4.0)
    assert result.throughput_rps == pytest.approx(100.0)
    assert result.latency_ms["p50"] == 3.0
    assert result.generator_cpu == pytest.approx(1.5 / 5.5)  # CPU over the processes' wall time


def test_a_saturated_or_starved_generator_is_warned_about() -> None:
    busy = build_result(SPEC, PAYLOAD, [samples([1.0], cpu_s=1.9)])
    assert any("generator saturated" in w for w in busy.warnings)
    starved = build_result(SPEC, PAYLOAD, [samples([1.0], cpu_s=0.4, wait_s=1.4)])
    assert starved.generator_wait == pytest.approx(0.7)
    assert any("generator starved" in w for w in starved.warnings)
    assert not any("saturated" in w for w in starved.warnings)
    fine = build_result(SPEC, PAYLOAD, [samples([1.0], cpu_s=0.4, wait_s=0.2)])
    assert fine.warnings == ()


def test_open_loop_offered_rate_send_lag_and_overload() -> None:
    spec = BenchSpec(url=SPEC.url, model="echo", concurrency=None, rate=100.0, duration_s=2.0)
    part = samples([1.0] * 150, num_scheduled=200, send_lag_ms=[0.1] * 98 + [9.0, 9.0],
                   errors=Counter({"client overloaded": 50}))  # fmt: skip
    result = build_result(spec, PAYLOAD, [part])
    assert result.offered_rps == pytest.approx(100.0)
    assert result.send_lag_ms is not None and result.send_lag_ms["p99"] == 9.0
    assert any("generator late" in w for w in result.warnings)
    assert any("client overloaded: 50" in w for w in result.warnings)


def test_streaming_runs_report_tokens() -> None:
    spec = BenchSpec(url=SPEC.url, model="llm", api="openai")
    part = samples([50.0] * 10, ttft_ms=[5.0] * 10, itl_ms=[2.0] * 90, output_tokens=100)
    result = build_result(spec, Payload((b"",), streaming=True), [part])
    assert result.output_tokens_per_s == pytest.approx(50.0)
    assert result.ttft_ms is not None and result.ttft_ms["p99"] == 5.0
    assert result.itl_ms is not None and result.itl_ms["mean"] == 2.0
    table = format_result(result)
    assert "ttft ms" in table and "itl ms" in table and "50.0 tokens/s" in table


def test_json_round_trip_keeps_everything_and_writes_no_nan(tmp_path: Path) -> None:
    nothing = build_result(SPEC, PAYLOAD, [samples([], errors=Counter({"connect": 4}))])
    assert math.isnan(nothing.latency_ms["p50"])
    assert "no request succeeded" in nothing.warnings
    path = tmp_path / "r.json"
    save_result(nothing, path)
    assert "NaN" not in path.read_text()
    again = load_result(path)
    assert again.spec == nothing.spec and again.errors == {"connect": 4}
    assert math.isnan(again.latency_ms["p99"]) and again.warnings == nothing.warnings
    shaped = BenchSpec(url=SPEC.url, model="m", shapes=(("x", (2, 3)),), binary=True)
    result = build_result(shaped, PAYLOAD, [samples([1.0, 2.0])])
    assert BenchResult.from_json(result.to_json()) == result


def test_loading_something_else_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match=r"--compare .*other.json: not a bench result"):
        load_result(path)


def test_table_shows_rates_percentiles_and_errors() -> None:
    part = samples([1.0, 2.0, 3.0, 4.0], errors=Counter({"http 503": 2, "timeout": 1}))
    table = format_result(build_result(SPEC, PAYLOAD, [part]))
    assert "throughput   2.0 req/s, 16.0 rows/s" in table
    assert "goodput      2.0 req/s within 10 ms" in table
    assert "error        http 503: 2" in table and "error        timeout: 1" in table
    assert "p99.9" in table and "latency ms" in table


def test_comparison_puts_runs_side_by_side_with_ratios() -> None:
    a = build_result(SPEC, PAYLOAD, [samples([4.0] * 100)])
    b = build_result(SPEC, PAYLOAD, [samples([2.0] * 200)])
    text = format_comparison(a, b, names=("before", "after"))
    rows = {line[:24].strip(): line[24:].split() for line in text.splitlines()[3:]}
    assert rows["throughput req/s"] == ["50", "100", "2.00"]
    assert rows["latency p50 ms"] == ["4", "2", "0.50"]
    assert rows["errors"] == ["0", "0", "-"]
    assert text.splitlines()[0].startswith("before: http://127.0.0.1:8000 model echo")
