"""Issue 3's figures on the demo MLP (FP32 512 -> 2048 -> 2048 -> 10), all in one run.

    .venv/bin/python -m benchmarks.pool_load [--seconds 8] [--only NAME ...] [--rounds 1]

Servers run pinned to core 1 (so a replica gets one compute thread), the load generators to
core 0. ``--front-end-core 0`` moves the server's front end (not its replica) to core 0 for the
binary and overload parts: the layout of a machine with a core for HTTP apart from the model's.
Parts:
  raw       the model in-process on core 1, one thread: rows/s per batch size (the reference),
            as exported and with its weights packed as inferd packs them
  single    one row per JSON request, 64 keep-alive clients (wrk): textbook vs inferd,
            alternating, --rounds times (the figure: the median of the per-round ratios)
  binary    per round: the raw model at batch 64, then 64 rows per request through the binary
            extension (wrk, 2 and 8 clients): the median of the rounds' served / raw
  overload  per round: open-loop Poisson arrivals at twice the capacity (closed loop, 8
            clients), deadline 1 s in the body, then in a header; each window's goodput over the
            mean of the capacities measured just before and after it (the figure: the median)
  slo       a fixed request rate against delay 0, a large fixed delay, and SLO mode
  ahead     (not in the default set) 64-row binary requests, 2 and 8 clients: the MLP with
            ``send_ahead`` off and on, alternately; best with --front-end-core 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.harness import (
    CLIENT_CORE,
    SERVER_CORE,
    Server,
    cpu_seconds,
    descendants,
    inferd_server,
    move_front_end,
    save,
    textbook_server,
    wrk,
)
from benchmarks.openloop import run_open_loop
from inferd.demo import demo_repository

JSON = {"Content-Type": "application/json"}


def json_body(rows: int) -> bytes:
    data = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32)
    return orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [rows, 512], "datatype": "FP32", "data": data.ravel()}
            ]
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def binary_body(rows: int, timeout_us: int | None = None) -> tuple[bytes, dict[str, str]]:
    data = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32)
    parameters: dict[str, object] = {"binary_data_output": True}
    if timeout_us:
        parameters["timeout"] = timeout_us
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [rows, 512],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes},
                }
            ],
            "parameters": parameters,
        }
    )
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + data.tobytes(), headers


def raw_module(pt2: Path, packed: bool = False) -> Any:
    """The model itself, loaded in this process; ``packed``: its linear weights packed as
    inferd's torch backend packs them."""
    import torch

    from inferd.backends.torch_packing import pack_model

    module = torch.export.load(str(pt2)).module()
    if packed:
        pack_model(module)
    return module


def raw_rows_per_s(module: Any, batch: int, seconds: float) -> float:
    """Rows/s of ``module`` at ``batch`` rows, in this process on the server's core, one
    thread (the server, idle meanwhile, shares that core)."""
    import torch

    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            x = torch.randn(batch, 512)
            module(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                module(x)
                n += 1
            return n * batch / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, saved)


def raw_throughput(pt2: Path, seconds: float, packed: bool = False) -> dict[int, float]:
    """Rows/s of the model itself by batch size (see ``raw_rows_per_s``)."""
    module = raw_module(pt2, packed)
    return {b: raw_rows_per_s(module, b, seconds / 6) for b in (1, 8, 32, 64, 128, 256)}


def variant(mlp: Path, root: Path, name: str, batching: str) -> Path:
    """A copy of the MLP with another ``[batching]`` table."""
    folder = root / name
    shutil.copytree(mlp, folder)
    toml = (folder / "model.toml").read_text()
    start = toml.index("[batching]")
    end = toml.index("[[inputs]]")
    (folder / "model.toml").write_text(
        f"{toml[:start]}[batching]\n{batching}\n\n{toml[end:]}".replace(
            'name = "mlp"', f'name = "{name}"'
        )
    )
    return folder


def single_row(mlp: Path, seconds: float, rounds: int) -> list[dict[str, object]]:
    """Textbook then inferd, ``rounds`` times, both servers up throughout (the idle one costs
    nothing): the VM's speed drifts within minutes, so each round's ratio is taken seconds apart."""
    body, url_path = json_body(1), "/v2/models/mlp/infer"
    textbook = textbook_server("mlp")
    inferd = inferd_server([mlp])
    out: list[dict[str, object]] = []
    try:
        for server in (textbook, inferd):
            wrk(server.url + url_path, body, 8, 2, JSON)
        for index in range(rounds):
            tb = wrk(textbook.url + url_path, body, 64, seconds, JSON)
            ib = wrk(inferd.url + url_path, body, 64, seconds, JSON)
            out.append({"textbook": tb, "inferd": ib})
            print(
                f"round {index + 1}, 1 row/request, 64 clients: "
                f"textbook {tb.requests_per_s:,.0f} req/s p99 {tb.p99_ms:.1f} ms; "
                f"inferd {ib.requests_per_s:,.0f} req/s p99 {ib.p99_ms:.1f} ms; "
                f"ratio {ib.requests_per_s / tb.requests_per_s:.2f}x",
                flush=True,
            )
    finally:
        textbook.stop()
        inferd.stop()
    return out


def binary_64(
    mlp: Path, seconds: float, rounds: int, front_end_core: str | None = None
) -> list[dict[str, object]]:
    """Per round: the raw model at batch 64 (as exported, and packed as inferd serves it), then
    64-row binary requests from 2 and 8 clients, seconds apart: a raw figure from a minute
    earlier once put the served rows/s at 154% of it."""
    body, headers = binary_body(64)
    exported, packed = raw_module(mlp / "model.pt2"), raw_module(mlp / "model.pt2", True)
    server = _server(mlp, front_end_core)
    out: list[dict[str, object]] = []
    try:
        url = server.url + "/v2/models/mlp/infer"
        wrk(url, body, 4, 2, headers)
        for index in range(rounds):
            raw = {
                "exported": raw_rows_per_s(exported, 64, seconds / 2),
                "packed": raw_rows_per_s(packed, 64, seconds / 2),
            }
            served = {f"c{c}": wrk(url, body, c, seconds, headers) for c in (2, 8)}
            out.append({"raw_rows_per_s": raw, **served})
            shares = ", ".join(
                f"{key} {r.requests_per_s * 64:,.0f} rows/s = "
                f"{r.requests_per_s * 64 / raw['exported']:.0%} of exported / "
                f"{r.requests_per_s * 64 / raw['packed']:.0%} of packed (p99 {r.p99_ms:.0f} ms)"
                for key, r in served.items()
            )
            print(
                f"round {index + 1}, 64 rows/request binary: raw at batch 64 "
                f"{raw['exported']:,.0f} rows/s exported, {raw['packed']:,.0f} packed; {shares}",
                flush=True,
            )
    finally:
        server.stop()
    return out


def send_ahead(
    mlp: Path, root: Path, seconds: float, rounds: int, front_end_core: str | None
) -> list[dict[str, float]]:
    """Per round: 64-row binary requests from 2 and 8 clients to copies of the MLP with
    ``send_ahead = false`` and ``true``, both servers up, measured alternately; the figure is
    the median of the per-round ratios, and each window's replica share."""
    body, headers = binary_body(64)
    batching = "max_batch_size = 64\nmax_queue_delay_ms = 1.0"
    folders = {
        "off": variant(mlp, root, "mlp_plain", batching + "\nsend_ahead = false"),
        "on": variant(mlp, root, "mlp_ahead", batching + "\nsend_ahead = true"),
    }
    servers = {key: _server(folder, front_end_core) for key, folder in folders.items()}
    out: list[dict[str, float]] = []
    try:
        urls = {k: f"{s.url}/v2/models/{folders[k].name}/infer" for k, s in servers.items()}
        for url in urls.values():
            wrk(url, body, 8, 2, headers)
        for index in range(rounds):
            row: dict[str, float] = {}
            for key in ("off", "on") if index % 2 == 0 else ("on", "off"):
                for clients in (2, 8):
                    with CoreShare(servers[key]) as share:
                        rps = wrk(urls[key], body, clients, seconds, headers).requests_per_s
                    row[f"{key}_c{clients}_rows_per_s"] = rps * 64
                    row[f"{key}_c{clients}_replica_share"] = share.shares["replicas"]
            out.append(row)
            print(
                f"round {index + 1}, send_ahead: "
                + "; ".join(
                    f"c{c} {row[f'off_c{c}_rows_per_s']:,.0f} -> {row[f'on_c{c}_rows_per_s']:,.0f} "
                    f"rows/s (replica busy {row[f'off_c{c}_replica_share']:.0%} -> "
                    f"{row[f'on_c{c}_replica_share']:.0%})"
                    for c in (2, 8)
                ),
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    return out


def _report_binary(rounds: list[dict[str, object]]) -> None:
    for key in ("c2", "c8"):
        for ref in ("exported", "packed"):
            shares = [
                r[key].requests_per_s * 64 / r["raw_rows_per_s"][ref]  # type: ignore[index,attr-defined]
                for r in rounds
            ]
            median = statistics.median(shares)
            print(
                f"64 rows/request binary, {key}, share of the raw model {ref} per round: "
                f"{', '.join(f'{x:.0%}' for x in shares)}; median {median:.0%}"
            )


def _report_overload(rounds: list[dict[str, object]]) -> None:
    for way in ("parameter", "header"):
        shares = [r[way]["goodput_per_s"] / r[way]["capacity_rps"] for r in rounds]  # type: ignore[index]
        print(
            f"overload, deadline in the {way}, goodput / capacity per round: "
            f"{', '.join(f'{x:.0%}' for x in shares)}; median {statistics.median(shares):.0%}"
        )


def _report_ahead(rounds: list[dict[str, float]]) -> None:
    for clients in (2, 8):
        ratios = [r[f"on_c{clients}_rows_per_s"] / r[f"off_c{clients}_rows_per_s"] for r in rounds]
        print(
            f"send_ahead, {clients} clients, on / off per round: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}"
        )


def _pin_client() -> None:
    os.sched_setaffinity(0, {int(CLIENT_CORE)})


def _server(mlp: Path, front_end_core: str | None) -> Server:
    server = inferd_server([mlp])
    if front_end_core is not None:
        move_front_end(server, front_end_core)
    return server


def overload(
    mlp: Path, seconds: float, rounds: int, front_end_core: str | None = None
) -> list[dict[str, object]]:
    """Per round: capacity, overload with the deadline in the body, capacity, overload with it
    in the header, capacity. Overload is open-loop Poisson arrivals at twice the capacity just
    measured, each with a 1 s deadline; in the header (``inferd-timeout-ms``) it lets the server
    shed before reading the body.

    Capacity is the closed-loop throughput of 8 clients of 64-row binary requests (a request is
    always queued when a batch finishes). Each overload window is compared with the mean of the
    capacities measured just before and just after it: the VM's speed drifts by +-15% within a
    minute, and the bracket follows the drift. (Until session 6 the capacity was the larger of a
    2- and an 8-client window taken before both overload windows: the larger of two noisy
    draws, biased upward.)"""
    body, headers = binary_body(64)
    in_body, body_headers = binary_body(64, timeout_us=1_000_000)
    ways = {
        "parameter": (in_body, body_headers),
        "header": (body, {**headers, "inferd-timeout-ms": "1000"}),
    }
    server = _server(mlp, front_end_core)
    out: list[dict[str, object]] = []
    try:
        url = server.url + "/v2/models/mlp/infer"
        wrk(url, body, 4, 2, headers)

        def capacity() -> dict[str, object]:
            with CoreShare(server) as share:
                result = wrk(url, body, 8, seconds, headers)
            return {"rps": result.requests_per_s, **share.per_answer(result.requests)}

        for index in range(rounds):
            before = capacity()
            row: dict[str, object] = {"capacity": [before]}
            for way, (payload, fields) in ways.items():
                offered = 2 * before["rps"]  # type: ignore[operator]
                with CoreShare(server) as share:
                    result = asyncio.run(run_open_loop(url, payload, fields, offered, seconds, 1.0))
                after = capacity()
                summary = result.summary()
                bracket = (before["rps"] + after["rps"]) / 2  # type: ignore[operator]
                row[way] = {
                    **summary,
                    "offered_rps": offered,
                    "capacity_rps": bracket,
                    **share.per_answer(summary["ok_within_deadline"]),
                }
                row["capacity"].append(after)  # type: ignore[attr-defined]
                print(
                    f"round {index + 1}, deadline in the {way}: capacity {before['rps']:.1f} -> "
                    f"{after['rps']:.1f} req/s, offered {offered:.1f}, goodput "
                    f"{summary['goodput_per_s']:.1f} ({summary['goodput_per_s'] / bracket:.0%}); "
                    f"at capacity {_cpu(before)}, under overload {_cpu(row[way])}; "  # type: ignore[arg-type]
                    f"503 {summary['shed_503']}, 504 {summary['timeout_504']}, "
                    f"late {summary['ok_late']}, errors {summary['other_errors']}, "
                    f"hung {summary['hung']}",
                    flush=True,
                )
                before = after
            out.append(row)
    finally:
        server.stop()
    return out


def _cpu(window: dict[str, float]) -> str:
    return (
        f"front end {window['front_end']:.0%} / replica {window['replicas']:.0%} of the core, "
        f"replica {window['replica_us_per_answer']:.0f} us per answer"
    )


class CoreShare:
    """The share of a core the server's front end and its replicas used over a ``with`` block
    (CPU seconds from ``/proc`` over wall seconds)."""

    def __init__(self, server: Server) -> None:
        self._front = server.proc.pid
        self._replicas = descendants(self._front)
        self.shares: dict[str, float] = {}

    def __enter__(self) -> CoreShare:
        self._start = time.perf_counter()
        self._cpu = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = self._wall = time.perf_counter() - self._start
        end = self._read()
        self.shares = {k: (end[k] - self._cpu[k]) / wall for k in end}

    def _read(self) -> dict[str, float]:
        return {
            "front_end": cpu_seconds(self._front),
            "replicas": sum(cpu_seconds(p) for p in self._replicas),
        }

    def per_answer(self, answers: int) -> dict[str, float]:
        """The shares, and the replicas' CPU per answer: the VM's speed in that window."""
        wall = self._wall
        return {
            **self.shares,
            "replica_us_per_answer": self.shares["replicas"] * wall / max(answers, 1) * 1e6,
        }

    def __str__(self) -> str:
        return f"front end {self.shares['front_end']:.0%}, replicas {self.shares['replicas']:.0%}"


def _batch_stats(url: str, model: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    values = {}
    for line in text.splitlines():
        for key in (
            "inferd_batch_size_sum",
            "inferd_batch_size_count",
            "inferd_busy_seconds_total",
        ):
            if line.startswith(f'{key}{{model="{model}"}}'):
                values[key] = float(line.split()[-1])
    count = values.get("inferd_batch_size_count", 0.0)
    mean = values.get("inferd_batch_size_sum", 0.0) / count if count else float("nan")
    return mean, values.get("inferd_busy_seconds_total", 0.0)


def slo_comparison(
    mlp: Path, root: Path, rate: float, target_ms: float, seconds: float
) -> dict[str, object]:
    body, headers = binary_body(8)
    policies = {
        "fixed delay 0 ms": "max_batch_size = 64\nmax_queue_delay_ms = 0.0",
        "fixed delay 40 ms": "max_batch_size = 64\nmax_queue_delay_ms = 40.0",
        f"SLO mode, p99 {target_ms:.0f} ms": f"max_batch_size = 64\nslo_p99_ms = {target_ms}",
    }
    out: dict[str, object] = {}
    for i, (name, batching) in enumerate(policies.items()):
        folder = variant(mlp, root, f"mlp_{i}", batching)
        server = inferd_server([folder])
        try:
            url = f"{server.url}/v2/models/mlp_{i}/infer"
            asyncio.run(run_open_loop(url, body, headers, rate, 2.0, 10.0, seed=1))  # warm-up
            before = _batch_stats(server.url, f"mlp_{i}")
            result = asyncio.run(run_open_loop(url, body, headers, rate, seconds, target_ms / 1e3))
            mean_batch, busy = _batch_stats(server.url, f"mlp_{i}")
            out[name] = {
                **result.summary(),
                "mean_batch_rows": mean_batch,
                "replica_busy": (busy - before[1]) / result.duration_s,
            }
        finally:
            server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", nargs="*", default=["raw", "single", "binary", "overload", "slo"])
    parser.add_argument(
        "--front-end-core",
        help="binary, overload, ahead: move the server's front end to this core (0, the load "
        "generator's), leaving core 1 to the replica; default: both share core 1",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of the single, binary and overload parts"
    )
    parser.add_argument("--slo-rate", type=float, default=250.0, help="requests/s of 8 rows")
    parser.add_argument("--slo-target-ms", type=float, default=40.0)
    args = parser.parse_args()
    mlp = demo_repository() / "mlp"
    root = Path(tempfile.mkdtemp())
    results: dict[str, object] = {}
    if "raw" in args.only:
        results["raw_rows_per_s"] = raw = raw_throughput(mlp / "model.pt2", args.seconds)
        print("raw rows/s by batch:", {k: round(v) for k, v in raw.items()})
        packed = raw_throughput(mlp / "model.pt2", args.seconds, packed=True)
        results["raw_packed_rows_per_s"] = packed
        print("raw, weights packed, rows/s by batch:", {k: round(v) for k, v in packed.items()})
    if "single" in args.only:
        results["single_row"] = single = single_row(mlp, args.seconds, args.rounds)
        ratios = [r["inferd"].requests_per_s / r["textbook"].requests_per_s for r in single]  # type: ignore[attr-defined]
        print(
            f"1 row/request, inferd / textbook per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"median {statistics.median(ratios):.2f}x"
        )
    if "binary" in args.only:
        results["binary_64"] = binary = binary_64(
            mlp, args.seconds, args.rounds, args.front_end_core
        )
        _report_binary(binary)
    _pin_client()
    if "ahead" in args.only:
        results["send_ahead"] = ahead = send_ahead(
            mlp, root, args.seconds, args.rounds, args.front_end_core
        )
        _report_ahead(ahead)
    if "overload" in args.only:
        results["overload"] = over = overload(mlp, args.seconds, args.rounds, args.front_end_core)
        _report_overload(over)
    if "slo" in args.only:
        results["slo"] = slo = slo_comparison(
            mlp, root, args.slo_rate, args.slo_target_ms, args.seconds
        )
        print(
            f"| policy ({args.slo_rate:.0f} req/s x 8 rows) | p99 ms "
            f"| within {args.slo_target_ms:.0f} ms | "
            "mean batch rows | replica busy |"
        )
        print("|---|---|---|---|---|")
        for name, r in slo.items():
            within = r["ok_within_deadline"] / max(1, r["sent"])  # type: ignore[index]
            print(
                f"| {name} | {r['p99_ms']:.1f} | {within:.1%} | {r['mean_batch_rows']:.1f} | "
                f"{r['replica_busy']:.0%} |"
            )  # type: ignore[index]
    print("saved", save("pool_load", results))


if __name__ == "__main__":
    main()
