"""The held-out digits that agreement is measured on, cached so a replica skips scikit-learn.

Splitting the digits (``inferd.demo.data``) imports scikit-learn and scipy: seconds for each
replica that converts a model on load. The split is fixed by scikit-learn's data and version,
so it is saved once as ``held_out_digits-sklearn<version>.npz`` under inferd's cache folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np

from inferd.config import cache_dir


def held_out_digits() -> tuple[np.ndarray, np.ndarray] | None:
    """(x float32 (450, 64), y int64), or None where scikit-learn (which ships them) is absent."""
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = cache_dir() / "optimize" / f"held_out_digits-sklearn{version}.npz"
    try:
        with np.load(path) as saved:
            return saved["x"], saved["y"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # not cached yet, or a broken file: split again
    from inferd.demo.data import held_out_digits as split

    x, y = split()
    _save(path, x, y)
    return x, y


def _save(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write atomically; a cache that cannot be written only costs the next load time."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
