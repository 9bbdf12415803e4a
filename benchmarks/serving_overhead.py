"""Issue 2's figures: what inferd adds to a model's own time, against the textbook server.

    .venv/bin/python -m benchmarks.serving_overhead [--seconds 8] [--rounds 5] [--process]

Echo model (FP32 [1, 16] in, the same out). wrk runs pinned to core 0, each server to core 1.
Reports: one client in a loop (median latency minus the model's own time) and 64 concurrent
keep-alive clients (requests/s), for inferd and the textbook FastAPI server in the same run,
alternating, ``--rounds`` times; the figure is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import inferd_server, save, textbook_server, wrk
from inferd.demo import demo_repository
from inferd.demo.echo_model import Echo

BODY = (
    b'{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32",'
    b'"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
)
HEADERS = {"Content-Type": "application/json"}


def model_time_ms(repeats: int = 20000) -> float:
    """Median time of the echo model's own predict, in-process."""
    echo, x = Echo(), {"input": np.ones((1, 16), np.float32)}
    samples = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        echo.predict(x)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1e6


def measure(server_url: str, seconds: float) -> dict[str, object]:
    url = f"{server_url}/v2/models/echo/infer"
    return {
        "one_client": wrk(url, BODY, 1, seconds, HEADERS),
        "c64": wrk(url, BODY, 64, seconds, HEADERS),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure both servers this many times, alternating"
    )
    parser.add_argument(
        "--process", action="store_true", help="also measure echo in a replica process, once"
    )
    args = parser.parse_args()
    repo = demo_repository()
    own_ms = model_time_ms()
    results: dict[str, object] = {"model_time_ms": own_ms, "rounds": []}
    # Both servers stay up (the idle one costs nothing) and are measured back to back in each
    # round: the VM's speed drifts by tens of percent within minutes, so a ratio is only
    # meaningful between measurements taken seconds apart.
    textbook = textbook_server("echo")
    inferd = inferd_server([repo / "echo"])
    try:
        for server in (textbook, inferd):
            wrk(f"{server.url}/v2/models/echo/infer", BODY, 64, 2, HEADERS)  # warm-up
        for index in range(args.rounds):
            round_ = {"textbook": measure(textbook.url, args.seconds),
                      "inferd": measure(inferd.url, args.seconds)}  # fmt: skip
            results["rounds"].append(round_)  # type: ignore[attr-defined]
            _report_round(index + 1, round_, own_ms)
    finally:
        textbook.stop()
        inferd.stop()
    if args.process:
        isolated = inferd_server([_process_isolated_echo(repo / "echo")])
        try:
            results["inferd_process"] = measure(isolated.url, args.seconds)
        finally:
            isolated.stop()
    _report(results)
    print("saved", save("serving_overhead", results))


def _process_isolated_echo(echo: Path) -> Path:
    """A copy of the demo's echo model with process isolation (the demo's runs in a thread)."""
    folder = Path(tempfile.mkdtemp()) / "echo"
    shutil.copytree(echo, folder)
    toml = folder / "model.toml"
    toml.write_text(toml.read_text().replace('isolation = "thread"', 'isolation = "process"'))
    return folder


def _report_round(index: int, r: dict[str, Any], own_ms: float) -> None:
    tb, ib = r["textbook"], r["inferd"]
    print(
        f"round {index}: 1 client p50 textbook {tb['one_client'].p50_ms:.3f} ms, inferd "
        f"{ib['one_client'].p50_ms:.3f} ms (overhead {ib['one_client'].p50_ms - own_ms:.3f}); "
        f"64 clients textbook {tb['c64'].requests_per_s:,.0f} req/s "
        f"(p99 {tb['c64'].p99_ms:.1f} ms), inferd {ib['c64'].requests_per_s:,.0f} req/s "
        f"(p99 {ib['c64'].p99_ms:.1f} ms): {_ratio(r):.2f}x",
        flush=True,
    )


def _ratio(r: dict[str, Any]) -> float:
    return float(r["inferd"]["c64"].requests_per_s / r["textbook"]["c64"].requests_per_s)


def _report(r: dict[str, Any]) -> None:
    own = r["model_time_ms"]
    rounds = r["rounds"]
    print(f"echo model's own time: {own * 1e3:.2f} us (median)")
    overheads = [x["inferd"]["one_client"].p50_ms - own for x in rounds]
    ratios = [_ratio(x) for x in rounds]
    print(f"one client, inferd's overhead (median of {len(rounds)} rounds): "
          f"{statistics.median(overheads):.3f} ms (max {max(overheads):.3f})")  # fmt: skip
    print(f"64 clients, inferd / textbook per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f}x")  # fmt: skip
    if "inferd_process" in r:
        many = r["inferd_process"]["c64"]
        print(f"echo in a replica process: {many.requests_per_s:,.0f} req/s at 64 clients, "
              f"one client p50 {r['inferd_process']['one_client'].p50_ms:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
