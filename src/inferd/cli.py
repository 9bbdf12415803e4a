"""The ``inferd`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from inferd.errors import ConfigError
from inferd.version import __version__

_DESCRIPTION = """\
inferd serves tensor models over the Open Inference Protocol (KServe v2, the protocol Triton
speaks: tritonclient works against it).

  inferd serve                      serve the built-in demo models (built on first start)
  inferd serve ./models             serve a model repository (a folder of model folders)
  inferd serve model.onnx x.joblib  serve model files that need no configuration
  inferd check ./models             load the models and print what inferd read from them
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferd",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inferd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP",
        description="Serve models over the Open Inference Protocol.",
    )
    _add_paths(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or $INFERD_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000, or $INFERD_PORT)")
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="inferd.toml with a [server] table (host, port, max_body_bytes, log_level)",
    )
    serve.add_argument(
        "--max-body-mb", type=float, metavar="MB", help="largest request body accepted (default 64)"
    )
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])

    check = commands.add_parser(
        "check",
        help="load models and print their resolved configuration",
        description="Load each model and print what inferd read from it.",
    )
    _add_paths(check)

    demo = commands.add_parser("demo", help="build the demo repository and print its path")
    demo.add_argument("--rebuild", action="store_true", help="build again even if cached")
    return parser


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="model repository, model folder or model file (default: the demo)",
    )


def _model_paths(paths: list[Path]) -> list[Path]:
    if paths:
        return paths
    from inferd.demo import demo_repository

    return [demo_repository()]


def _serve(args: argparse.Namespace) -> int:
    from inferd.config import load_server_config
    from inferd.server.serve import serve

    max_body = int(args.max_body_mb * 1024 * 1024) if args.max_body_mb else None
    config = load_server_config(
        args.config,
        host=args.host,
        port=args.port,
        max_body_bytes=max_body,
        log_level=args.log_level,
    )
    logging.getLogger().setLevel(config.log_level.upper())
    serve(_model_paths(args.paths), config)
    return 0


def _check(args: argparse.Namespace) -> int:
    from inferd.repository import discover, load_model

    failed = 0
    for entry in discover(_model_paths(args.paths)):
        if entry.config is None:
            print(f"✗ {entry.name}: {entry.error}")
            failed += 1
            continue
        try:
            _, config = load_model(entry.config)
        except Exception as e:  # report every broken model, not just the first
            print(f"✗ {entry.name}: {e}")
            failed += 1
            continue
        print(f"✓ {config.name} ({config.backend}, {config.path})")
        for kind, specs in (("input", config.inputs), ("output", config.outputs)):
            for s in specs:
                print(f"    {kind:6} {s.name:20} {s.datatype:6} {list(s.shape)}")
        b = config.batching
        print(
            f"    batching: max_batch_size={b.max_batch_size} "
            f"max_queue_delay_ms={b.max_queue_delay_ms} instances={config.instances}"
        )
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from inferd.demo import demo_repository

    print(demo_repository(rebuild=args.rebuild))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferd`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    commands = {"serve": _serve, "check": _check, "demo": _demo}
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except ConfigError as e:
        print(f"inferd: configuration error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
