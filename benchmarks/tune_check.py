"""Does ``inferd tune``'s recommendation hold when ``inferd bench`` measures it again?

    .venv/bin/python -m benchmarks.tune_check [--models echo mlp] [--repeats 3] [--seconds 10]

For each demo model: tune it (a small budget; the report folder is kept under .bench/), then
serve the recommended configuration and, as the reference in the same run, the model as the
demo ships it (its own model.toml), and load each with ``inferd bench`` (the command line) at
the recommended concurrency, ``--repeats`` times, alternating. Prints the tuner's own figure,
the re-measured medians and worst p99, whether every re-measured p99 met the target, and the
tuned/shipped throughput ratio. Servers are started exactly as the tuner's trials are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import RESULTS, save
from inferd.demo import demo_repository
from inferd.tune.report import FULL_CONFIG
from inferd.tune.serving import TrialServer
from inferd.tune.settings import TuneSettings
from inferd.tune.trial import LoadSettings
from inferd.tune.tuner import TuneOutcome, tune

TARGETS_MS = {"echo": 25.0, "mlp": 100.0}


@dataclass
class Run:
    rows_per_s: float
    p99_ms: float
    errors: int


def bench(url: str, model: str, concurrency: int, seconds: float, slo_ms: float) -> Run:
    """One ``inferd bench`` run, through the command line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "inferd", "bench", url, "--model", model,
               "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "2",
               "--slo-ms", str(slo_ms), "--json", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        data = json.loads(out.read_text())
    return Run(data["rows_per_s"], data["latency_ms"]["p99"], data["num_errors"])


def check(
    model: str, out: Path, repeats: int, seconds: float, max_trials: int
) -> dict[str, object]:
    target = TARGETS_MS[model]
    started = time.monotonic()
    outcome = tune(
        TuneSettings(
            model_path=demo_repository() / model,
            slo_p99_ms=target,
            out=out,
            max_trials=max_trials,
            load=LoadSettings(),  # the defaults: 3 s steps after 1 s of warm-up
        )
    )
    tune_s = time.monotonic() - started
    if outcome.best is None:
        print(f"{model}: target p99 {target:g} ms: no configuration met it; see {out}")
        return {"target_ms": target, "best": None, "tune_s": tune_s}
    best = outcome.best
    # The recommended configuration, in a model folder of its own; the reference as shipped.
    tuned = out / "check" / model
    tuned.mkdir(parents=True, exist_ok=True)
    for item in (demo_repository() / model).iterdir():
        if item.name != "model.toml" and not (tuned / item.name).exists():
            (tuned / item.name).symlink_to(item)
    (tuned / "model.toml").write_text((out / FULL_CONFIG).read_text())
    folders = {"tuned": tuned, "shipped": demo_repository() / model}
    runs: dict[str, list[Run]] = {"tuned": [], "shipped": []}
    for i in range(repeats):
        for name, folder in folders.items():
            with TrialServer(folder, out / f"check-{name}-{i}.log") as server:
                server.wait_ready(180.0)
                runs[name].append(
                    bench(server.url, model, best.measurement.concurrency, seconds, target)
                )
    return summarize(model, outcome, runs, tune_s)


def summarize(
    model: str, outcome: TuneOutcome, runs: dict[str, list[Run]], tune_s: float
) -> dict[str, object]:
    """The figures of one model, printed and returned for the JSON file."""
    assert outcome.best is not None
    measured, target = outcome.best.measurement, TARGETS_MS[model]

    def median(name: str, attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in runs[name])

    tuned_p99 = [r.p99_ms for r in runs["tuned"]]
    ratio = median("tuned", "rows_per_s") / median("shipped", "rows_per_s")
    result: dict[str, object] = {
        "target_ms": target,
        "recommended": outcome.best.candidate.key(),
        "concurrency": measured.concurrency,
        "trials": len(outcome.trials),
        "grid": outcome.space.grid_size(),
        "tune_s": round(tune_s, 1),
        "tuner_rows_per_s": measured.throughput,
        "tuner_p99_ms": measured.p99_ms,
        "tuned_rows_per_s_median": median("tuned", "rows_per_s"),
        "tuned_p99_ms_median": median("tuned", "p99_ms"),
        "tuned_p99_ms_worst": max(tuned_p99),
        "tuned_meets_target_every_run": all(p <= target for p in tuned_p99),
        "tuned_errors": sum(r.errors for r in runs["tuned"]),
        "shipped_rows_per_s_median": median("shipped", "rows_per_s"),
        "shipped_p99_ms_median": median("shipped", "p99_ms"),
        "tuned_over_shipped_throughput": ratio,
        "runs": {k: [vars(r) for r in v] for k, v in runs.items()},
    }
    print(
        f"{model}: target p99 {target:g} ms; tuner chose {result['recommended']} at "
        f"{measured.concurrency} clients ({result['trials']} trials of a {result['grid']}-point "
        f"grid, {tune_s:.0f} s): {measured.throughput:,.0f}/s, p99 {measured.p99_ms:.1f} ms "
        f"in its trial"
    )
    print(
        f"  re-measured by inferd bench, {len(tuned_p99)} runs: "
        f"{result['tuned_rows_per_s_median']:,.0f}/s median, p99 median "
        f"{result['tuned_p99_ms_median']:.1f} ms, worst {max(tuned_p99):.1f} ms; "
        f"meets the target in every run: {result['tuned_meets_target_every_run']}"
    )
    print(
        f"  shipped model.toml, same clients: {result['shipped_rows_per_s_median']:,.0f}/s, "
        f"p99 {result['shipped_p99_ms_median']:.1f} ms; tuned/shipped throughput {ratio:.2f}x"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="*", default=["echo", "mlp"], choices=sorted(TARGETS_MS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-trials", type=int, default=12)
    parser.add_argument(
        "--target", action="append", default=[], metavar="MODEL=MS", help="override a p99 target"
    )
    args = parser.parse_args()
    for item in args.target:
        name, _, ms = item.partition("=")
        TARGETS_MS[name] = float(ms)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # echo and mlp are all this needs: a demo without the LLM builds in seconds, not minutes.
    os.environ.setdefault("INFERD_DEMO_LLM", "0")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, object] = {}
    for model in args.models:
        out = RESULTS / f"tune_check-{stamp}" / model
        results[model] = check(model, out, args.repeats, args.seconds, args.max_trials)
    print("saved", save(f"tune_check-{stamp}", results))


if __name__ == "__main__":
    main()
