"""The PATH arguments that several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_paths(parser: argparse.ArgumentParser) -> None:
    """Add the positional ``PATH ...`` of models to serve or load."""
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="model repository, model folder or model file (default: the demo)",
    )


def model_paths(paths: list[Path]) -> list[Path]:
    """The paths given, or the demo repository (built on first use) when there are none."""
    if paths:
        return paths
    from inferd.demo import demo_repository

    return [demo_repository()]
