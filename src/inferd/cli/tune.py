"""``inferd tune``: find the serving configuration with the most throughput under a p99 target."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inferd.tune.measurement import Measurement

_DESCRIPTION = """\
Serve a model with candidate configurations (replicas, max batch size, queue delay; for an
LLM, max running sequences and token budget per step), load each with `inferd bench` at a
rising number of concurrent clients, and recommend the one with the highest throughput whose
p99 meets the target and whose memory fits the budget. Far fewer trials than a grid: see
docs/tune.md. Writes a report folder: summary.md/.html, a plot of
throughput against p99, recommended.toml to paste into model.toml, and trials.jsonl. Run the
same command again to resume; Ctrl-C stops the running trial and writes the report so far.

examples:
  inferd tune echo --slo-p99-ms 20                      a demo model, by name
  inferd tune ./models/resnet --slo-p99-ms 50 --memory-budget-mb 4096 --price-per-hour 0.9
  inferd tune ./models --model resnet --slo-p99-ms 50 --max-trials 12 --step-s 5
  inferd tune ./llama --slo-p99-ms 500 --slo-metric ttft --prompt-tokens 256 --max-tokens 128
"""


def add_parser(commands: Any) -> None:
    tune: argparse.ArgumentParser = commands.add_parser(
        "tune",
        help="search replicas, batch size and queue delay for the most throughput under a p99",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument(
        "model", metavar="MODEL", help="a model folder or file, a repository, or a demo model name"
    )
    tune.add_argument(
        "--model", dest="model_name", metavar="NAME", help="the model in a repository"
    )
    tune.add_argument(
        "--slo-p99-ms", type=float, required=True, metavar="MS", help="the p99 latency target"
    )
    tune.add_argument(
        "--out", type=Path, metavar="DIR", help="report folder (default ./tune-MODEL); resumes"
    )
    _add_budgets(tune.add_argument_group("budgets and cost"))
    _add_space(tune.add_argument_group("search space"))
    _add_llm(tune.add_argument_group("LLMs (a model with backend = llm, served over /v1)"))
    _add_load(tune.add_argument_group("load (each step is an `inferd bench` run)"))


def _add_budgets(group: Any) -> None:
    group.add_argument(
        "--memory-budget-mb", type=float, metavar="MB", help="most memory (PSS of all processes)"
    )
    group.add_argument(
        "--price-per-hour",
        type=float,
        metavar="PRICE",
        help="one replica's hardware per hour (default: the model's or --config's price_per_hour)",
    )
    group.add_argument(
        "--max-trials", type=int, default=30, metavar="N", help="most trials to run (30)"
    )
    group.add_argument(
        "--confirm",
        type=int,
        default=2,
        metavar="N",
        help="measure the best configuration again, up to N configurations (the next best when "
        "one does not hold); only one that met the target twice is recommended (2; 0: never)",
    )
    group.add_argument(
        "--confirm-s",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds per confirmation step (10, as long as an `inferd bench` run)",
    )
    group.add_argument(
        "--confirm-steps",
        type=int,
        default=2,
        metavar="N",
        help="lower loads a confirmation tries when p99 misses at the operating load (2)",
    )
    group.add_argument(
        "--config", type=Path, metavar="FILE", help="inferd.toml handed to each trial's server"
    )


def _add_space(group: Any) -> None:
    group.add_argument(
        "--max-replicas", type=int, metavar="N", help="most replicas (default: usable CPUs)"
    )
    group.add_argument(
        "--max-batch-size", type=int, default=256, metavar="N", help="largest batch tried (256)"
    )
    group.add_argument(
        "--delays-ms",
        default="0,1,2,5,10",
        metavar="MS,..",
        help="queue delays tried (0,1,2,5,10)",
    )
    group.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip timing the model in-process (which prunes batches too slow for the target)",
    )


def _add_llm(group: Any) -> None:
    group.add_argument(
        "--slo-metric",
        choices=["latency", "ttft", "itl"],
        help="whose p99 the target bounds: the whole request (tensor models), or an LLM's "
        "time to first token (its default) or inter-token latency",
    )
    group.add_argument(
        "--max-num-seqs", type=int, default=128, metavar="N", help="most running sequences (128)"
    )
    group.add_argument(
        "--token-budgets",
        default="256,512,1024,2048,4096",
        metavar="N,..",
        help="tokens per engine step tried (256,512,1024,2048,4096)",
    )
    group.add_argument(
        "--prompt-tokens", type=int, default=128, metavar="N", help="~N-word prompts (128)"
    )
    group.add_argument(
        "--max-tokens", type=int, default=64, metavar="N", help="tokens generated per request (64)"
    )


def _add_load(group: Any) -> None:
    group.add_argument(
        "--step-s", type=float, default=3.0, metavar="S", help="seconds per step (3)"
    )
    group.add_argument(
        "--warmup-s", type=float, default=1.0, metavar="S", help="unmeasured seconds per step (1)"
    )
    group.add_argument(
        "--max-concurrency", type=int, default=64, metavar="N", help="most clients in a step (64)"
    )
    group.add_argument(
        "--headroom",
        type=float,
        default=0.1,
        metavar="F",
        help="a step meets the target at p99 <= (1 - F) x target (0.1)",
    )
    group.add_argument("--rows", type=int, default=1, metavar="N", help="rows per request (1)")
    group.add_argument("--binary", action="store_true", help="send binary tensor data")
    group.add_argument(
        "--bench-processes", type=int, default=1, metavar="N", help="load generator processes (1)"
    )


def run(args: argparse.Namespace) -> int:
    from inferd.config import usable_cpus
    from inferd.tune.settings import TuneSettings
    from inferd.tune.trial import LoadSettings
    from inferd.tune.tuner import INTERRUPTED, tune

    path = model_path(args.model)
    settings = TuneSettings(
        model_path=path,
        model_name=args.model_name,
        slo_p99_ms=args.slo_p99_ms,
        out=args.out or Path(f"tune-{args.model_name or path.name}"),
        memory_budget_mb=args.memory_budget_mb,
        price_per_hour=args.price_per_hour,
        max_trials=args.max_trials,
        confirm=args.confirm,
        confirm_s=args.confirm_s,
        confirm_steps=args.confirm_steps,
        max_replicas=args.max_replicas or usable_cpus(),
        max_batch_size=args.max_batch_size,
        delays_ms=_numbers("--delays-ms", args.delays_ms),
        max_concurrency=args.max_concurrency,
        headroom=args.headroom,
        max_num_seqs=args.max_num_seqs,
        token_budgets=tuple(int(v) for v in _numbers("--token-budgets", args.token_budgets)),
        slo_metric=args.slo_metric,
        load=LoadSettings(
            step_s=args.step_s,
            warmup_s=args.warmup_s,
            rows=args.rows,
            binary=args.binary,
            processes=args.bench_processes,
            prompt_tokens=args.prompt_tokens,
            max_tokens=args.max_tokens,
        ),
        server_config=args.config,
        calibrate=not args.no_calibrate,
    )
    outcome = tune(settings)
    print(f"\n{len(outcome.trials)} trials ({outcome.status}); report: {settings.out}/summary.md")
    if outcome.best is None:
        print("no configuration met the target; see the report for the nearest")
    else:
        m = outcome.best.measurement
        print(
            f"recommended: {outcome.best.candidate.key()}: {m.throughput:.1f} {outcome.unit}/s at "
            f"{outcome.metric} {m.p99_ms:.2f} ms with {m.concurrency} clients "
            f"({settings.out}/recommended.toml)"
        )
        print(_provenance(outcome.unconfirmed, outcome.unit, outcome.metric, settings.confirm_s))
    if outcome.status == INTERRUPTED:
        print("interrupted: run the same command again to resume")
        return 130
    return 0 if outcome.best is not None else 1


def _provenance(m: Measurement | None, unit: str, metric: str, confirm_s: float) -> str:
    """Whether the recommended figures were confirmed; if so, what its trial alone measured."""
    if m is None:
        return "  measured once, in its trial (not confirmed)"
    return (
        f"  confirmed over {confirm_s:g} s per load step; unconfirmed, its trial measured "
        f"{m.throughput:.1f} {unit}/s at {metric} {m.p99_ms:.2f} ms with {m.concurrency} clients"
    )


def model_path(model: str) -> Path:
    """MODEL as given: a path that exists, else the demo repository's model of that name."""
    from inferd.errors import ConfigError

    path = Path(model)
    if path.exists():
        return path
    from inferd.demo import demo_repository

    demo = demo_repository() / model
    if "/" not in model and demo.is_dir():
        return demo
    raise ConfigError(f"MODEL {model}: no such file or folder, and no demo model of that name")


def _numbers(flag: str, text: str) -> tuple[float, ...]:
    from inferd.errors import ConfigError

    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"{flag} {text}: expected numbers separated by commas")
    return values
