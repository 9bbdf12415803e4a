"""Readable text: one run as a table, two runs side by side with their ratios (pure)."""

from __future__ import annotations

import math

from inferd.bench.result import SATURATED_CPU, BenchResult
from inferd.bench.stats import QUANTILES

_COLUMNS = [name for name, _ in QUANTILES] + ["mean", "max"]


def format_result(result: BenchResult) -> str:
    """The run as a table: what was loaded how, rates, latency percentiles, errors, warnings."""
    spec = result.spec
    lines = [
        f"inferd bench  {spec.url}  model {spec.model}  ({_inputs(result)})",
        f"load         {spec.describe_load()}, {spec.processes} generator process"
        f"{'es' if spec.processes > 1 else ''}; {result.duration_s:.2f} s measured"
        f" after {spec.warmup_s:g} s of warm-up ({result.num_warmup} requests)",
        f"requests     {result.num_ok} ok, {result.num_errors} errors",
    ]
    if result.offered_rps is not None:
        lines.append(f"offered      {result.offered_rps:.1f} req/s")
    rows = f", {result.rows_per_s:.1f} rows/s" if spec.api == "kserve" else ""
    lines.append(f"throughput   {result.throughput_rps:.1f} req/s{rows}")
    if result.goodput_rps is not None:
        lines.append(f"goodput      {result.goodput_rps:.1f} req/s within {spec.slo_ms:g} ms")
    if result.output_tokens_per_s is not None:
        lines.append(f"output       {result.output_tokens_per_s:.1f} tokens/s")
    lines += ["", f"{'':14}" + "".join(f"{c:>10}" for c in _COLUMNS)]
    for label, summary in _summaries(result):
        lines.append(f"{label:14}" + "".join(f"{_num(summary[c]):>10}" for c in _COLUMNS))
    lines.append("")
    for kind, count in result.errors.items():
        lines.append(f"error        {kind}: {count}")
    cpu_flag = "  (saturated)" if result.generator_cpu > SATURATED_CPU else ""
    waited = result.generator_wait
    wait_note = "" if waited is None else f", waited for a CPU {waited:.0%} of the time"
    lines.append(f"generator    {result.generator_cpu:.0%} CPU per process{wait_note}{cpu_flag}")
    lines += [f"WARNING      {warning}" for warning in result.warnings]
    return "\n".join(lines)


def _inputs(result: BenchResult) -> str:
    spec = result.spec
    if spec.api == "openai":
        source = spec.input_file or f"~{spec.prompt_tokens}-word prompts"
        return f"openai {'chat' if spec.chat else 'completions'}, {source}, stream"
    encoding = "binary" if spec.binary else "JSON"
    source = spec.input_file or "generated"
    rows = result.rows_per_request
    return f"kserve {encoding}, {source}, {rows} row{'' if rows == 1 else 's'}/request"


def _summaries(result: BenchResult) -> list[tuple[str, dict[str, float]]]:
    found = [("latency ms", result.latency_ms)]
    if result.ttft_ms is not None:
        found.append(("ttft ms", result.ttft_ms))
    if result.itl_ms is not None:
        found.append(("itl ms", result.itl_ms))
    if result.send_lag_ms is not None:
        found.append(("send lag ms", result.send_lag_ms))
    return found


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def format_comparison(a: BenchResult, b: BenchResult, names: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side, with B/A for every figure both have."""
    lines = [f"{name}: {_describe(r)}" for name, r in zip(names, (a, b), strict=True)]
    lines += ["", f"{'':24}{names[0]:>12}{names[1]:>12}{names[1] + '/' + names[0]:>10}"]
    for label, x, y in _rows(a, b):
        lines.append(f"{label:24}{_num(x):>12}{_num(y):>12}{_ratio(x, y):>10}")
    return "\n".join(lines)


def _describe(r: BenchResult) -> str:
    return f"{r.spec.url} model {r.spec.model}, {_inputs(r)}, {r.spec.describe_load()}"


def _rows(a: BenchResult, b: BenchResult) -> list[tuple[str, float | None, float | None]]:
    rows: list[tuple[str, float | None, float | None]] = [
        ("throughput req/s", a.throughput_rps, b.throughput_rps),
        ("goodput req/s", a.goodput_rps, b.goodput_rps),
        ("rows/s", a.rows_per_s, b.rows_per_s),
    ]
    rows += [(f"latency {c} ms", a.latency_ms[c], b.latency_ms[c]) for c in _COLUMNS]
    if a.ttft_ms is not None or b.ttft_ms is not None:
        for label, x, y in (("ttft", a.ttft_ms, b.ttft_ms), ("itl", a.itl_ms, b.itl_ms)):
            rows += [(f"{label} {c} ms", _get(x, c), _get(y, c)) for c in ("p50", "p99")]
        rows.append(("output tokens/s", a.output_tokens_per_s, b.output_tokens_per_s))
    rows += [
        ("ok", float(a.num_ok), float(b.num_ok)),
        ("errors", float(a.num_errors), float(b.num_errors)),
        ("generator cpu", a.generator_cpu, b.generator_cpu),
    ]
    return rows


def _get(summary: dict[str, float] | None, key: str) -> float | None:
    return None if summary is None else summary[key]


def _ratio(x: float | None, y: float | None) -> str:
    if x is None or y is None or math.isnan(x) or math.isnan(y) or x == 0:
        return "-"
    return f"{y / x:.2f}"
