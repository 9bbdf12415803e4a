"""``inferd check``: load models and print what inferd read from them."""

from __future__ import annotations

import argparse
from typing import Any

from inferd.cli.paths import add_paths, model_paths
from inferd.config import ModelConfig


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
        if entry.config.backend == "llm":
            failed += _check_llm(entry.config)
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
            f"max_queue_delay_ms={b.max_queue_delay_ms} instances={config.instances} "
            f"precision={config.precision}"
        )
    return 1 if failed else 0


def _check_llm(config: ModelConfig) -> int:
    """Read an LLM's architecture and tokenizer (not its weights); 1 if that fails."""
    try:
        from inferd.llm.checkpoint import load_arch_config
        from inferd.llm.tokenizer import Tokenizer

        arch = load_arch_config(config.path)
        tokenizer = Tokenizer.from_folder(config.path)
    except ImportError as e:
        print(f"✗ {config.name}: an LLM needs PyTorch: install inferd[torch] ({e})")
        return 1
    except Exception as e:  # report every broken model, not just the first
        print(f"✗ {config.name}: {e}")
        return 1
    print(f"✓ {config.name} (llm, {config.path})")
    print(
        f"    {arch.architecture}: {arch.num_layers} layers, hidden {arch.hidden_size}, "
        f"{arch.num_heads} heads ({arch.num_kv_heads} KV), vocab {arch.vocab_size}, "
        f"context {arch.max_model_len}"
    )
    template = "its own" if tokenizer.has_chat_template else "the default"
    print(f"    tokenizer: {tokenizer.vocab_size} tokens, chat template: {template}")
    s = config.llm
    print(
        f"    engine: dtype={s.dtype} kv_cache_mb={s.kv_cache_mb} block_size={s.block_size} "
        f"max_num_seqs={s.max_num_seqs} max_num_batched_tokens={s.max_num_batched_tokens}"
    )
    print("    served at /v1/completions and /v1/chat/completions (OpenAI API)")
    return 0
