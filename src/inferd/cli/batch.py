"""``inferd batch``: run a model over a file of rows, resumable, in input order."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_DESCRIPTION = """\
Run a model over every row of a JSON Lines, CSV or Parquet file and write its outputs, in
input order, to OUTPUT (the format follows each file's suffix).

Columns to inputs, for each model input (the first rule that applies):
  1. --input NAME=COL or --input NAME=COL1,COL2,...   these columns, in this order
  2. a column named like the input                      a list column gives each row's array
  3. a model with a single input                        every numeric column, in file order
Several columns are placed side by side as the row's vector. The output holds the id column
(--id-column, else a column named "id", else "row": the input row index) and one column per
model output. Rows that fail go, with their error, to OUTPUT-STEM.errors.jsonl.

The job commits its output in chunks to OUTPUT.inferd-job/ as it goes. On SIGINT or SIGTERM it
finishes the chunks in flight and stops (a second signal drops them); run the same command again
to resume. When every chunk is committed, the parts are merged into OUTPUT.

examples:
  inferd batch ./models/mlp rows.parquet -o scores.parquet
  inferd batch ./models --model digits rows.csv -o labels.csv --price-per-hour 0.34
  inferd batch mlp rows.jsonl -o out.jsonl --url http://127.0.0.1:8000
  inferd batch ./models/mlp rows.parquet -o out.parquet --estimate
"""


def add_parser(commands: Any) -> None:
    batch: argparse.ArgumentParser = commands.add_parser(
        "batch",
        help="run a model over a file of rows (resumable)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("model", metavar="MODEL",
                       help="model folder, model file or repository (with --url: the model's "
                            "name on the server)")  # fmt: skip
    batch.add_argument("input", type=Path, metavar="INPUT", help="rows: .jsonl, .csv or .parquet")
    batch.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT",
                       help="where the outputs go: .jsonl, .csv or .parquet")  # fmt: skip
    _add_mapping(batch)
    _add_execution(batch)
    _add_control(batch)
    _add_sampling(batch)


def _add_mapping(batch: argparse.ArgumentParser) -> None:
    group = batch.add_argument_group("columns and formats")
    group.add_argument("--model", dest="model_name", metavar="NAME",
                       help="which model of the repository MODEL")  # fmt: skip
    group.add_argument("--input", dest="inputs", action="append", default=[],
                       metavar="NAME=COL[,COL...]",
                       help="feed model input NAME from these columns (repeatable)")  # fmt: skip
    group.add_argument("--id-column", metavar="COL",
                       help="column copied to the output to name each row (default: 'id' if "
                            "there is one, else the row index)")  # fmt: skip
    formats = ["jsonl", "csv", "parquet"]
    group.add_argument("--input-format", choices=formats, help="when INPUT's suffix does not say")
    group.add_argument("--output-format", choices=formats, help="when OUTPUT's suffix does not say")


def _add_execution(batch: argparse.ArgumentParser) -> None:
    group = batch.add_argument_group("execution")
    group.add_argument("--url", metavar="URL",
                       help="send the rows to a running inferd instead of loading the model "
                            "here")  # fmt: skip
    group.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="rows per batch (default: the fastest, measured on a sample)",
    )
    group.add_argument("--chunk-rows", type=int, metavar="N",
                       help="rows committed at a time (default: up to 8192, about 32 MB of "
                            "inputs); a multiple of the batch size")  # fmt: skip
    group.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="model replicas (processes) to run (default: the model's instances if it sets "
        "them, else one single-threaded replica per core, as many as half the free memory "
        "holds)",
    )
    group.add_argument(
        "--max-rows-per-s",
        type=float,
        metavar="R",
        help="cap the job's speed, to leave the machine room for other work",
    )


def _add_control(batch: argparse.ArgumentParser) -> None:
    group = batch.add_argument_group("cost, estimate, restart")
    group.add_argument("--price-per-hour", type=float, metavar="PRICE",
                       help="what one replica costs per hour (default: price_per_hour of the "
                            "model, else of --config)")  # fmt: skip
    group.add_argument(
        "--config",
        dest="server_config",
        type=Path,
        metavar="FILE",
        help="inferd.toml whose [server] price_per_hour applies",
    )
    group.add_argument("--estimate", action="store_true",
                       help="measure on a sample and print the expected time and cost; write "
                            "nothing")  # fmt: skip
    group.add_argument(
        "--restart",
        action="store_true",
        help="discard the progress of an interrupted job writing OUTPUT",
    )
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a live progress bar (default: when stderr is a terminal)",
    )


def _add_sampling(batch: argparse.ArgumentParser) -> None:
    group = batch.add_argument_group(
        "LLM jobs",
        "MODEL is an LLM folder (config.json + *.safetensors): each row's 'prompt' column (text) "
        "or 'messages' column (chat messages, rendered with the model's chat template) is "
        "answered; the outputs are text, finish_reason and completion_tokens",
    )
    group.add_argument("--max-tokens", type=int, default=128, metavar="N",
                       help="most tokens generated per row (default 128)")  # fmt: skip
    group.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="0 (the default) is greedy: a resumed job repeats itself",
    )
    group.add_argument("--top-p", type=float, default=1.0, metavar="P")
    group.add_argument("--top-k", type=int, default=-1, metavar="K")
    group.add_argument("--seed", type=int, metavar="S", help="seed of sampled rows")
    group.add_argument("--stop", action="append", default=[], metavar="TEXT",
                       help="a string that ends a row's text (repeatable)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys

    from inferd.errors import ConfigError, InferdError
    from inferd.jobs.batch import run_job
    from inferd.jobs.options import JobOptions, parse_input_mapping

    options = JobOptions(
        model=args.model,
        input=args.input,
        output=args.output,
        model_name=args.model_name,
        input_format=args.input_format,
        output_format=args.output_format,
        inputs=parse_input_mapping(args.inputs),
        id_column=args.id_column,
        batch_size=args.batch_size,
        chunk_rows=args.chunk_rows,
        replicas=args.replicas,
        price_per_hour=args.price_per_hour,
        url=args.url,
        estimate=args.estimate,
        restart=args.restart,
        max_rows_per_s=args.max_rows_per_s,
        progress=args.progress,
        server_config=args.server_config,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    try:
        return run_job(options)
    except ConfigError:
        raise  # the command line's own message, exit status 2
    except InferdError as e:
        print(f"inferd batch: {e.message}", file=sys.stderr)
        return 1
