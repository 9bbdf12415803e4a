"""Issue 2's figures: what inferd adds to a model's own time, against the textbook server.

    .venv/bin/python -m benchmarks.serving_overhead [--seconds 8]

Echo model (FP32 [1, 16] in, the same out). wrk runs pinned to core 0, each server to core 1.
Reports: one client in a loop (median latency minus the model's own time) and 64 concurrent
keep-alive clients (requests/s), for inferd and the textbook FastAPI server in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

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
    wrk(url, BODY, 8, 2, HEADERS)  # warm-up
    return {
        "one_client": wrk(url, BODY, 1, seconds, HEADERS),
        "c64": wrk(url, BODY, 64, seconds, HEADERS),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    repo = demo_repository()
    own_ms = model_time_ms()
    results: dict[str, object] = {"model_time_ms": own_ms}
    isolated = _process_isolated_echo(repo / "echo")
    for name, start in (
        ("textbook", lambda: textbook_server("echo")),
        ("inferd", lambda: inferd_server([repo / "echo"])),
        ("inferd_process", lambda: inferd_server([isolated])),
    ):
        server = start()
        try:
            results[name] = measure(server.url, args.seconds)
        finally:
            server.stop()
    _report(results)
    print("saved", save("serving_overhead", results))


def _process_isolated_echo(echo: Path) -> Path:
    """A copy of the demo's echo model with process isolation (the demo's runs in a thread)."""
    folder = Path(tempfile.mkdtemp()) / "echo"
    shutil.copytree(echo, folder)
    toml = folder / "model.toml"
    toml.write_text(toml.read_text().replace('isolation = "thread"', 'isolation = "process"'))
    return folder


def _report(r: dict[str, object]) -> None:
    own = r["model_time_ms"]
    ib, tb = r["inferd"], r["textbook"]
    print(f"echo model's own time: {own * 1e3:.2f} us (median)")  # type: ignore[operator]
    print(
        "| server | 1 client p50 ms | p99 ms | overhead ms | 64 clients req/s | p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = (("textbook FastAPI", tb), ("inferd (echo in a thread)", ib),
            ("inferd (echo in a replica process)", r["inferd_process"]))  # fmt: skip
    for name, res in rows:
        one, many = res["one_client"], res["c64"]  # type: ignore[index]
        print(f"| {name} | {one.p50_ms:.3f} | {one.p99_ms:.3f} | {one.p50_ms - own:.3f} | "
              f"{many.requests_per_s:,.0f} | {many.p50_ms:.2f} | {many.p99_ms:.2f} |")  # fmt: skip
    ratio = ib["c64"].requests_per_s / tb["c64"].requests_per_s  # type: ignore[index]
    print(f"inferd / textbook at 64 clients: {ratio:.2f}x")


if __name__ == "__main__":
    main()
