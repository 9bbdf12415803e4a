"""``inferd bench``: load a server over HTTP and report what it sustained."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotation only: importing the bench package here is not cheap
    from inferd.bench import BenchSpec

_DESCRIPTION = """\
Load any server that speaks the Open Inference Protocol (KServe v2) or the OpenAI API, and
report throughput, goodput under a latency target, latency percentiles and errors by kind
(for LLMs also time to first token, inter-token latency and output tokens per second).

examples:
  inferd bench http://127.0.0.1:8000 --model echo                   8 clients, 10 s
  inferd bench http://127.0.0.1:8000 --model echo --rate 2000 --slo-ms 5 --json run.json
  inferd bench http://127.0.0.1:8000 --model m --rate 100 --rate-end 1000 --duration 30
  inferd bench http://127.0.0.1:8000 --model llm --api openai --prompt-tokens 256
  inferd bench --compare before.json after.json
"""


def add_parser(commands: Any) -> None:
    bench: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="load a server (KServe v2 or OpenAI API) and report what it sustained",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("url", nargs="?", metavar="URL", help="base URL, e.g. http://127.0.0.1:8000")
    bench.add_argument(
        "--model", "-m", metavar="NAME", help="the model to load (required with URL)"
    )
    bench.add_argument(
        "--api", choices=["kserve", "openai"], default="kserve", help="protocol (default kserve)"
    )
    _add_load(bench.add_argument_group("load"))
    _add_inputs(bench.add_argument_group("inputs"))
    out = bench.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON")
    out.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        help="print two saved results side by side with B/A ratios (no load is run)",
    )


def _add_load(group: Any) -> None:
    group.add_argument(
        "--concurrency",
        "-c",
        type=int,
        metavar="N",
        help="closed loop: concurrent clients (default 8)",
    )
    group.add_argument(
        "--rate", "-r", type=float, metavar="RATE", help="open loop: Poisson arrivals per second"
    )
    group.add_argument(
        "--rate-end", type=float, metavar="RATE", help="open loop: ramp linearly to this rate"
    )
    group.add_argument(
        "--duration", "-d", type=float, default=10.0, metavar="S", help="measured seconds (10)"
    )
    group.add_argument(
        "--requests", "-n", type=int, metavar="N", help="measure N requests instead of a duration"
    )
    group.add_argument(
        "--warmup", type=float, default=2.0, metavar="S", help="unmeasured seconds first (2)"
    )
    group.add_argument(
        "--slo-ms", type=float, metavar="MS", help="latency target: report goodput under it"
    )
    group.add_argument(
        "--processes",
        "-p",
        type=int,
        default=1,
        metavar="N",
        help="generator processes (default 1)",
    )
    group.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (30)"
    )
    group.add_argument(
        "--max-outstanding",
        type=int,
        default=1024,
        metavar="N",
        help="open loop: in-flight bound; arrivals past it count as 'client overloaded'",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of arrivals and data (0)")


def _add_inputs(group: Any) -> None:
    group.add_argument(
        "--input-file",
        metavar="FILE",
        help="request bodies: one JSON object, or JSON Lines (cycled); default: generated",
    )
    group.add_argument(
        "--rows",
        type=int,
        default=1,
        metavar="N",
        help="kserve: rows per generated request (default 1)",
    )
    group.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,..",
        help="kserve: the full shape of a generated input (for variable dims; repeatable)",
    )
    group.add_argument(
        "--binary", action="store_true", help="kserve: send and ask for binary tensor data"
    )
    group.add_argument(
        "--chat", action="store_true", help="openai: /v1/chat/completions (default /v1/completions)"
    )
    group.add_argument(
        "--prompt-tokens", type=int, default=128, metavar="N", help="openai: ~N-word prompts (128)"
    )
    group.add_argument(
        "--max-tokens", type=int, default=64, metavar="N", help="openai: tokens to generate (64)"
    )
    group.add_argument(
        "--no-ignore-eos",
        action="store_true",
        help="openai: do not send ignore_eos (sent by default when the server takes it)",
    )


def run(args: argparse.Namespace) -> int:
    from inferd.bench import format_comparison, format_result, load_result, run_bench, save_result
    from inferd.errors import ConfigError, InferdError

    if args.compare:
        a, b = (load_result(path) for path in args.compare)
        print(format_comparison(a, b, names=(args.compare[0].stem, args.compare[1].stem)))
        return 0
    try:
        result = run_bench(spec_from_args(args))
    except ConfigError:
        raise  # the command line reports it
    except InferdError as e:
        print(f"inferd bench: {e.message}", file=sys.stderr)
        return 1
    print(format_result(result))
    if args.json is not None:
        save_result(result, args.json)
        print(f"saved {args.json}")
    return 0


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    """The ``BenchSpec`` the flags describe (``ConfigError`` names a bad flag)."""
    from inferd.bench import BenchSpec
    from inferd.errors import ConfigError

    if args.url is None or args.model is None:
        raise ConfigError("bench: give a URL and --model (or --compare A.json B.json)")
    concurrency = args.concurrency
    if concurrency is None and args.rate is None:
        concurrency = 8
    return BenchSpec(
        url=args.url,
        model=args.model,
        api=args.api,
        concurrency=concurrency,
        rate=args.rate,
        rate_end=args.rate_end,
        duration_s=args.duration,
        warmup_s=args.warmup,
        num_requests=args.requests,
        slo_ms=args.slo_ms,
        processes=args.processes,
        timeout_s=args.timeout,
        max_outstanding=args.max_outstanding,
        seed=args.seed,
        input_file=args.input_file,
        rows=args.rows,
        shapes=tuple(_shape(text) for text in args.shape),
        binary=args.binary,
        chat=args.chat,
        prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens,
        ignore_eos=not args.no_ignore_eos,
    )


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    from inferd.errors import ConfigError

    name, _, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not name or not shape:
        raise ConfigError(f"bench: --shape {text!r}: expected NAME=D0,D1,.. e.g. input=4,16")
    return name, shape
