"""What a shed request costs the front end, with its deadline in the body or in a header.

    .venv/bin/python -m benchmarks.shed_cost [--rounds 3] [--seconds 4]

The demo MLP on core 1, wrk on core 0. Per round and per way of sending the deadline:
2 clients send 64-row binary requests that are served (the baseline: the front end's CPU per
served request), then the same 2 clients again while 8 more send requests with a 1 ms deadline,
which the queue ahead rules out. The front end's extra CPU over the baseline, divided by the
shed requests, is the cost of one refusal. With the deadline in ``parameters.timeout`` the body
must be read before the request can be refused; with ``inferd-timeout-ms`` it is not read.
"""

from __future__ import annotations

import argparse
import statistics
import threading

from benchmarks.harness import WrkResult, cpu_seconds, inferd_server, wrk
from benchmarks.pool_load import binary_body
from inferd.demo import demo_repository


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    body, headers = binary_body(64)
    in_body, body_headers = binary_body(64, timeout_us=1000)
    ways = {
        "parameter": (in_body, body_headers),
        "header": (body, {**headers, "inferd-timeout-ms": "1"}),
    }
    server = inferd_server([demo_repository() / "mlp"])
    costs: dict[str, list[float]] = {way: [] for way in ways}
    try:
        url = server.url + "/v2/models/mlp/infer"
        front = server.proc.pid
        wrk(url, body, 2, 2, headers)
        for index in range(args.rounds):
            for way, (shed_body, shed_headers) in ways.items():
                start = cpu_seconds(front)
                base = wrk(url, body, 2, args.seconds, headers)
                per_served = (cpu_seconds(front) - start) / base.requests
                shed: list[WrkResult] = []
                flood = threading.Thread(
                    target=_flood, args=(shed, url, shed_body, shed_headers, args.seconds)
                )
                start = cpu_seconds(front)
                flood.start()
                served = wrk(url, body, 2, args.seconds, headers)
                flood.join()
                extra = cpu_seconds(front) - start - per_served * served.requests
                cost = extra / shed[0].requests
                costs[way].append(cost)
                print(
                    f"round {index + 1}, deadline in the {way}: {per_served * 1e6:.0f} µs per "
                    f"served request alone; {shed[0].requests_per_s:,.0f} shed/s beside "
                    f"{served.requests_per_s:.0f} served/s (alone: {base.requests_per_s:.0f}); "
                    f"{cost * 1e6:.0f} µs of front-end CPU per shed request",
                    flush=True,
                )
    finally:
        server.stop()
    for way, values in costs.items():
        print(f"deadline in the {way}: median {statistics.median(values) * 1e6:.0f} µs per shed")


def _flood(
    out: list[WrkResult], url: str, body: bytes, headers: dict[str, str], seconds: float
) -> None:
    out.append(wrk(url, body, 8, seconds, headers))


if __name__ == "__main__":
    main()
