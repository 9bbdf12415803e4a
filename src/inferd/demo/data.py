"""The digits data set behind the demo classifiers, split once so every model is compared alike.

``sklearn.datasets.load_digits`` ships inside scikit-learn: 1,797 8x8 images, pixel values 0-16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

TEST_SIZE: Final = 0.25
SPLIT_SEED: Final = 0


@dataclass(frozen=True, slots=True)
class DigitsSplit:
    """The fixed train/test split: x as float32 of shape (n, 64), y as int64 labels 0-9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> DigitsSplit:
    """Load digits and split it (stratified, ``random_state=0``, 25 % held out)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32),
        y.astype(np.int64),
        test_size=TEST_SIZE,
        random_state=SPLIT_SEED,
        stratify=y,
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)


def held_out_digits() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split every demo digits model was scored on: (x float32 (n, 64), y int64)."""
    split = digits_split()
    return split.x_test, split.y_test
