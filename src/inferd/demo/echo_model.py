"""The demo ``echo`` model, copied to ``echo/model.py`` in the demo repository.

It returns its input unchanged, so a benchmark against it measures pure serving overhead.
It imports nothing from inferd, so the copy loads on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Echo:
    """Returns the ``input`` tensor as ``output`` and does nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Accept and ignore whatever the python backend hands over (e.g. ``[parameters]``)."""

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Echo one batch."""
        return {"output": inputs["input"]}
