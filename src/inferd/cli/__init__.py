"""The ``inferd`` command line: one module per command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from inferd.errors import ConfigError
from inferd.version import __version__

COMMANDS = ("serve", "check", "demo", "batch", "stream", "bench", "optimize", "tune")
"""Modules of this package, in the order ``--help`` lists them. Each defines
``add_parser(commands) -> None`` (argparse only: importing it must stay cheap) and
``run(args) -> int`` (which imports what the command needs)."""

_DESCRIPTION = """\
inferd serves tensor models over the Open Inference Protocol (KServe v2, the protocol Triton
speaks: tritonclient works against it) and LLMs over the OpenAI API.

  inferd serve                      serve the built-in demo models (built on first start)
  inferd serve ./models             serve a model repository (a folder of model folders)
  inferd serve model.onnx x.joblib  serve model files, or a Hugging Face LLM folder
  inferd check ./models             load the models and print what inferd read from them
  inferd batch MODEL IN -o OUT      predictions for a whole file, resumable after interruption
  inferd stream MODEL               answer JSON Lines from stdin, a file, or a Redis stream
  inferd bench URL -m MODEL         load any KServe v2 or OpenAI server and report latency
  inferd tune MODEL --slo-p99-ms X  find the fastest configuration that meets a p99 target
  inferd optimize PATH --precision int8   convert a model and report size, speed, accuracy
"""


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"inferd.cli.{name}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferd",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inferd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        _command(name).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferd`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = _command(args.command).run(args)
        return result
    except ConfigError as e:
        print(f"inferd: configuration error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
