"""The demo's PyTorch models, exported with ``torch.export`` (a dynamic batch axis) to ``.pt2``.

Imported only when torch is installed; the rest of the demo builds without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import nn

from inferd.demo.data import DigitsSplit
from inferd.llm.device import compute_threads

SEED: Final = 0
TRAIN_STEPS: Final = 100
LEARNING_RATE: Final = 1e-2
PIXEL_MAX: Final = 16.0


def export_digits_mlp(split: DigitsSplit, path: Path) -> float:
    """Train a 64 -> 128 -> 10 MLP on the digits, export it to ``path``; held-out accuracy."""
    # One thread: the steps are tiny, so more threads only contend, and one thread gives the
    # same weights (hence the same recorded accuracy) on every machine.
    with torch.random.fork_rng(devices=[]), compute_threads(1):
        torch.manual_seed(SEED)
        model = _train_digits_mlp(split)
    _export(model, torch.zeros(8, 64), path)
    return _accuracy(path, split)


def export_benchmark_mlp(path: Path) -> None:
    """Export the 512 -> 2048 -> 2048 -> 10 benchmark MLP, random weights from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = nn.Sequential(
            nn.Linear(512, 2048),
            nn.ReLU(),
            nn.Linear(2048, 2048),
            nn.ReLU(),
            nn.Linear(2048, 10),
        )
    _export(model, torch.zeros(8, 512), path)


def _train_digits_mlp(split: DigitsSplit) -> nn.Sequential:
    # Full-batch Adam: the train split is ~1,350 rows, so each step is one small matmul.
    first = nn.Linear(64, 128)
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(128, 10))
    x = torch.from_numpy(split.x_train) / PIXEL_MAX
    y = torch.from_numpy(split.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        torch.autograd.backward(nn.functional.cross_entropy(model(x), y))
        optimizer.step()
    # Trained on x / 16; fold the scale into the first layer so the model takes raw pixels.
    with torch.no_grad():
        first.weight /= PIXEL_MAX
    return model


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    model.eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def _accuracy(path: Path, split: DigitsSplit) -> float:
    """Score the saved file itself, so a broken export cannot pass as accurate."""
    module = torch.export.load(path).module()
    with torch.inference_mode():
        logits = module(torch.from_numpy(split.x_test))
    return round(float(np.mean(logits.argmax(dim=1).numpy() == split.y_test)), 4)
