"""``inferd optimize``: convert models to a lower precision and report what it buys."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path
from typing import Any

from inferd.cli.paths import add_paths, model_paths
from inferd.errors import ConfigError

_DESCRIPTION = """\
Convert models to a lower precision and measure, in the same run, what it buys against the
original: size, speed at batch 1 and 64 (ratio of medians), and accuracy (agreement with the
original on the held-out digits for a digits classifier, else output differences on random
inputs).

  torch models   int8: dynamic int8 quantization of the linear layers; bf16, fp16: casts.
                 Converted on load in milliseconds, so nothing is written: set
                 precision = "int8" in the model's model.toml to serve it that way.
  onnx models    int8: onnxruntime dynamic quantization; fp16: float16 conversion.
                 Writes model.int8.onnx (or model.fp16.onnx) beside model.onnx, which a server
                 with precision = "int8" in model.toml reuses while it is up to date.
  LLM folders    (config.json + *.safetensors) are handed to inferd.llm.quant.

examples:
  inferd optimize ./models/digits --precision int8
  inferd optimize model.onnx --precision fp16 --out /tmp/model.fp16.onnx
  inferd optimize                      (every demo model that can be converted)
"""


def add_parser(commands: Any) -> None:
    optimize: argparse.ArgumentParser = commands.add_parser(
        "optimize",
        help="convert models to bf16 / fp16 / int8 and report size, speed and accuracy",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_paths(optimize)
    optimize.add_argument(
        "--precision",
        choices=("int8", "fp16", "bf16"),
        default="int8",
        help="the precision to convert to (default: int8)",
    )
    optimize.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="where to write the converted copy, for one ONNX model or LLM folder "
        "(default: beside the original)",
    )
    optimize.add_argument(
        "--repeats",
        type=int,
        default=20,
        metavar="N",
        help="timed calls per batch size; the report gives their median (default: 20)",
    )
    optimize.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="compute threads of each model while it is measured; 0: the library's default "
        "(default: 1, the steadiest ratio on a shared machine)",
    )


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: expected a count >= 1")
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: expected a count >= 0")
    paths = model_paths(args.paths)
    if args.out is not None and len(paths) != 1:
        raise ConfigError("--out names one output: give exactly one PATH with it")
    done = failed = 0
    for path in paths:
        ok, bad = _optimize_models(path, args)
        done, failed = done + ok, failed + bad
    if done == 0 and failed == 0:
        print("inferd optimize: no model here can be converted (only torch and onnx models can)")
        return 1
    return 1 if failed else 0


def _optimize_models(path: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Convert every model at ``path``; returns (converted, failed). Others are skipped."""
    from inferd.optimize import optimize_model
    from inferd.optimize.precision import unsupported
    from inferd.repository import discover

    entries = discover([path])
    if args.out is not None and len(entries) != 1:
        raise ConfigError(f"--out names one output, but {path} holds {len(entries)} models")
    done = failed = 0
    for entry in entries:
        if entry.config is None:
            print(f"✗ {entry.name}: {entry.error}")
            failed += 1
            continue
        if entry.config.backend == "llm":  # a Hugging Face checkpoint folder
            print(_optimize_llm(entry.config.path, args.precision, args.out))
            done += 1
            continue
        reason = unsupported(entry.config.backend, args.precision)
        if reason is not None:
            print(f"- {entry.name}: skipped ({reason})")
            continue
        config = dataclasses.replace(entry.config, threads=args.threads)
        try:
            optimized = optimize_model(config, args.precision, args.out, args.repeats)
        except Exception as e:  # report every broken model, not just the first
            print(f"✗ {entry.name}: {e}")
            failed += 1
            continue
        print(f"✓ {optimized.report.to_text()}")
        done += 1
    return done, failed


def _optimize_llm(path: Path, precision: str, out: Path | None) -> str:
    """Hand an LLM checkpoint folder to ``inferd.llm.quant.optimize_checkpoint``."""
    try:
        quant = importlib.import_module("inferd.llm.quant")
    except ModuleNotFoundError as e:
        if e.name != "inferd.llm.quant":
            raise ConfigError(
                f"{path}: quantizing an LLM needs {e.name}, which is not installed "
                "(pip install 'inferd[torch]')"
            ) from None
        quant = None
    optimize_checkpoint = getattr(quant, "optimize_checkpoint", None)
    if optimize_checkpoint is None:
        raise ConfigError(
            f"{path} is an LLM checkpoint folder, and this inferd cannot quantize LLMs yet "
            "(inferd.llm.quant.optimize_checkpoint is missing)"
        )
    report = optimize_checkpoint(path, precision, out)
    return str(report.to_text())
