"""Issue 6's check: does ``inferd bench`` measure what an independent generator (wrk) measures?

    .venv/bin/python -m benchmarks.bench_vs_wrk [--seconds 5] [--rounds 3] [--connections 16]

Each server in turn (the textbook FastAPI server, then ``inferd serve`` of the demo echo) runs
pinned to core 1; the generators take turns on core 0: wrk (one thread), ``inferd bench`` with
one generator process (in this process) and with two. All run closed loop with the same number
of connections and the very same request bytes (echo, FP32 [1, 16] as JSON), ``rounds`` times,
the order rotating each round. Reports per server the median requests/s of each generator,
bench / wrk within each round, p50/p99 latencies, and what bench says about itself: its CPU use
and the share of the time it waited for a CPU. The machine is noisy: compare within a round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import CLIENT_CORE, Server, inferd_server, save, textbook_server, wrk
from benchmarks.serving_overhead import BODY, HEADERS
from inferd.bench import BenchSpec, run_bench
from inferd.demo import demo_repository

GENERATORS = ("wrk", "bench", "bench_p2")
Run = Callable[[], dict[str, float]]


def bench_once(
    url: str, body_file: Path, processes: int, args: argparse.Namespace
) -> dict[str, float]:
    """One ``inferd bench`` run, closed loop, the body from ``body_file``."""
    spec = BenchSpec(
        url=url,
        model="echo",
        concurrency=args.connections,
        duration_s=args.seconds,
        warmup_s=1.0,
        processes=processes,
        input_file=str(body_file),
    )
    result = run_bench(spec)
    return {
        "requests_per_s": result.throughput_rps,
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "errors": result.num_errors,
        "generator_cpu": result.generator_cpu,
        "generator_wait": -1.0 if result.generator_wait is None else result.generator_wait,
    }


def wrk_once(url: str, args: argparse.Namespace) -> dict[str, float]:
    """One wrk run with the same body and connections, after a warm-up as bench has."""
    wrk(url + "/v2/models/echo/infer", BODY, 8, 1, HEADERS)
    r = wrk(url + "/v2/models/echo/infer", BODY, args.connections, args.seconds, HEADERS)
    return {"requests_per_s": r.requests_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "errors": r.errors}  # fmt: skip


def compare(server: Server, body_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``rounds`` of each generator against one server, rotating which goes first."""
    runs: dict[str, Run] = {
        "wrk": lambda: wrk_once(server.url, args),
        "bench": lambda: bench_once(server.url, body_file, 1, args),
        "bench_p2": lambda: bench_once(server.url, body_file, 2, args),
    }
    rounds = []
    for n in range(args.rounds):
        order = GENERATORS[n % 3 :] + GENERATORS[: n % 3]
        got = {name: runs[name]() for name in order}
        wrk_rps = got["wrk"]["requests_per_s"]
        for name in ("bench", "bench_p2"):
            got[name]["vs_wrk"] = got[name]["requests_per_s"] / wrk_rps
        rounds.append(got)
        print(f"  {server.name} round {n + 1}: wrk {wrk_rps:,.0f} req/s; " + "; ".join(
            f"{name} {got[name]['requests_per_s']:,.0f} ({got[name]['vs_wrk']:.2f}x, CPU "
            f"{got[name]['generator_cpu']:.0%}, waited {got[name]['generator_wait']:.0%})"
            for name in ("bench", "bench_p2")))  # fmt: skip
    return {"rounds": rounds, "summary": _summary(rounds)}


def _summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for name in GENERATORS:
        keys = rounds[0][name].keys()
        summary[name] = {k: float(statistics.median(r[name][k] for r in rounds)) for k in keys}
        if name != "wrk":
            ratios = [r[name]["vs_wrk"] for r in rounds]
            summary[name] |= {"vs_wrk_min": min(ratios), "vs_wrk_max": max(ratios)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    # inferd bench runs in this process and its generator processes inherit the pinning.
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    repo = demo_repository()
    results: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(BODY)
        servers: list[tuple[str, Callable[[], Server]]] = [
            ("textbook", lambda: textbook_server("echo")),
            ("inferd", lambda: inferd_server([repo / "echo"])),
        ]
        for name, start in servers:
            server = start()
            try:
                results[name] = compare(server, body_file, args)
            finally:
                server.stop()
    _report(results)
    print("saved", save("bench_vs_wrk", results))


def _report(results: dict[str, Any]) -> None:
    print(f"\n{results['connections']} connections, {results['seconds']:g} s per run, "
          "medians over the rounds")  # fmt: skip
    print("| server | generator | req/s | vs wrk (median, range) | p50 ms | p99 ms | "
          "generator CPU | waited for a CPU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for server in ("textbook", "inferd"):
        for name in GENERATORS:
            s = results[server]["summary"][name]
            ratio = (
                "1"
                if name == "wrk"
                else (f"{s['vs_wrk']:.2f} ({s['vs_wrk_min']:.2f} to {s['vs_wrk_max']:.2f})")
            )
            own = "-" if name == "wrk" else f"{s['generator_cpu']:.0%}"
            wait = "-" if name == "wrk" else f"{s['generator_wait']:.0%}"
            print(f"| {server} | {name} | {s['requests_per_s']:,.0f} | {ratio} | "
                  f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {own} | {wait} |")  # fmt: skip


if __name__ == "__main__":
    main()
