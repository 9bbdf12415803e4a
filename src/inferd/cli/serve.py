"""``inferd serve``: serve models over HTTP."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from inferd.cli.paths import add_paths, model_paths


def add_parser(commands: Any) -> None:
    serve: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve models over HTTP",
        description="Serve models over the Open Inference Protocol.",
    )
    add_paths(serve)
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


def run(args: argparse.Namespace) -> int:
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
    serve(model_paths(args.paths), config)
    return 0
