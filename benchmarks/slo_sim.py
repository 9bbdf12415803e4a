"""The SLO batching mode against fixed queue delays, in a discrete-event simulation (no sleeps).

    .venv/bin/python -m benchmarks.slo_sim

One replica; Poisson arrivals of one row each from a seeded ``random.Random``; a fake model whose
batch takes ``a + b·rows`` seconds, times a uniform ±10% jitter. The batcher's decisions are
replayed exactly: when the replica is free and rows wait, ask the policy how long to wait; wake
on the next arrival, the end of the running batch, or the end of that wait. Prints a markdown
table per request rate. Arrivals are open-loop, so below capacity every policy's throughput is
the offered rate; amortization shows as the replica's busy fraction (capacity left for more
load). The real-server benchmark comes later.
"""

from __future__ import annotations

from inferd.batching.policy import BatchPolicy, DispatchPolicy
from inferd.batching.simulation import Workload, simulate
from inferd.batching.slo import SloController, SloTarget

TARGET_S = 0.050
MAX_BATCH = 64
RATES = (100.0, 600.0, 1200.0)


def policies() -> dict[str, DispatchPolicy]:
    """The three modes compared: no delay, a large fixed delay, and the SLO controller."""
    return {
        "fixed delay 0 ms": BatchPolicy(MAX_BATCH, 0.0),
        f"fixed delay {TARGET_S * 1000:.0f} ms": BatchPolicy(MAX_BATCH, TARGET_S),
        f"slo p99 <= {TARGET_S * 1000:.0f} ms": SloController(SloTarget(TARGET_S, MAX_BATCH)),
    }


def main() -> None:
    load = Workload(rate=0.0)
    print(
        f"one replica, batch latency {load.a_s * 1e3:g} ms + {load.b_s * 1e3:g} ms/row "
        f"(±{load.jitter:.0%}), Poisson arrivals, {load.requests} requests, target p99 "
        f"{TARGET_S * 1e3:g} ms\n"
    )
    for rate in RATES:
        print(f"### {rate:g} requests/s\n")
        print("| policy | p99 ms | mean batch size | throughput rows/s | replica busy |")
        print("|---|---:|---:|---:|---:|")
        for name, policy in policies().items():
            out = simulate(policy, Workload(rate=rate))
            print(
                f"| {name} | {out.p99_s * 1e3:.1f} | {out.mean_batch:.2f} | "
                f"{out.throughput:.0f} | {out.busy:.0%} |"
            )
        print()


if __name__ == "__main__":
    main()
