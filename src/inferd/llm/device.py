"""Where the LLM engine computes: the default device and torch's thread count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_compute_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (the engine's matrix work)."""
    if threads >= 1 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def compute_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch threads, then give the process its own count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
