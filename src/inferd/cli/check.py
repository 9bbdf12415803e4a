"""``inferd check``: load models and print what inferd read from them."""

from __future__ import annotations

import argparse
from typing import Any

from inferd.cli.paths import add_paths, model_paths


def add_parser(commands: Any) -> None:
    check: argparse.ArgumentParser = commands.add_parser(
        "check",
        help="load models and print their resolved configuration",
        description="Load each model and print what inferd read from it.",
    )
    add_paths(check)


def run(args: argparse.Namespace) -> int:
    from inferd.repository import discover, load_model

    failed = 0
    for entry in discover(model_paths(args.paths)):
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
