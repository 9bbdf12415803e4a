"""Which precisions each backend can serve, and the names of the optimised copies on disk.

The ``precision`` key itself is read and validated with the rest of ``model.toml`` in
``inferd.config`` (``PRECISIONS``); this module says what a backend can do with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from inferd.config import MODEL_CONFIG_FILE, PRECISIONS, ModelConfig
from inferd.errors import ConfigError

FULL: Final = "fp32"
SUPPORTED: Final[dict[str, tuple[str, ...]]] = {
    "torch": PRECISIONS,
    # onnxruntime's CPU provider has no bfloat16 kernels for the common ops.
    "onnx": ("fp32", "fp16", "int8"),
    "sklearn": (FULL,),
    "python": (FULL,),
}
_COPY_NAME: Final = re.compile(r"^(?P<stem>.+)\.(?:" + "|".join(PRECISIONS[1:]) + r")$")


def unsupported(backend: str, precision: str) -> str | None:
    """Why ``backend`` cannot serve a model at ``precision``; None if it can."""
    allowed = SUPPORTED.get(backend, (FULL,))
    if precision in allowed:
        return None
    return f"the {backend} backend serves {', '.join(allowed)}, not {precision}"


def check_supported(config: ModelConfig, precision: str, where: str | None = None) -> None:
    """Raise ``ConfigError`` unless the model's backend can serve it at ``precision``.

    ``where`` names the setting, for the message (default: the ``precision`` key of the
    model's ``model.toml``).
    """
    where = where or f"precision in {config.source or config.path / MODEL_CONFIG_FILE}"
    if precision not in PRECISIONS:
        raise ConfigError(
            f"model {config.name!r}: {where} = {precision!r}: expected one of "
            + ", ".join(PRECISIONS)
        )
    reason = unsupported(config.backend, precision)
    if reason is not None:
        raise ConfigError(
            f"model {config.name!r}: {where} = {precision!r}: {reason}; only torch "
            "(bf16, fp16, int8) and onnx (fp16, int8) models are converted"
        )


def copy_name(file_name: str, precision: str) -> str:
    """The optimised copy of ``model.onnx`` at int8 is ``model.int8.onnx``."""
    path = Path(file_name)
    return f"{path.stem}.{precision}{path.suffix}"


def is_optimized_copy(path: Path, siblings: Iterable[Path]) -> bool:
    """Whether ``path`` (``x.int8.onnx``) is a copy that inferd derived from a sibling ``x.*``.

    Model discovery skips such copies, so a folder with one model stays a folder with one model
    after ``inferd optimize`` wrote its copy beside it.
    """
    match = _COPY_NAME.match(path.stem)
    if match is None:
        return False
    original = match.group("stem")
    return any(p != path and p.stem == original for p in siblings)
