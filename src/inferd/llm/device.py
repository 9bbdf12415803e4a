"""Where the LLM engine computes: the default device and torch's thread count."""

from __future__ import annotations

import torch


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_compute_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (the engine's matrix work)."""
    if threads >= 1 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
