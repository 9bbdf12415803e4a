"""``inferd demo``: build the demo repository and print its path."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo", help="build the demo repository and print its path"
    )
    demo.add_argument("--rebuild", action="store_true", help="build again even if cached")


def run(args: argparse.Namespace) -> int:
    from inferd.demo import demo_repository

    print(demo_repository(rebuild=args.rebuild))
    return 0
