"""The one seam between inferd and a model: the ``Backend`` protocol and the backend registry.

Everything above this layer (batcher, replicas, server) sees only ``Backend``. Heavy frameworks
(torch, onnxruntime, scikit-learn) are imported lazily by ``create_backend``, so a server that
serves only ONNX models never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import numpy as np

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError

Tensors = dict[str, np.ndarray]


@runtime_checkable
class Backend(Protocol):
    """A loaded model. ``predict`` takes and returns arrays batched along the first axis."""

    def load(self) -> None:
        """Load the model into memory; raise with a clear message when the files are broken."""

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Inputs and outputs as the model itself declares them (empty where it cannot tell)."""

    def predict(self, inputs: Tensors) -> Tensors:
        """Run one batch. Called from a worker thread, never from the event loop."""


# backend name -> "module:Class"; imported only when a model needs it.
_REGISTRY: Final[dict[str, str]] = {
    "python": "inferd.backends.python_backend:PythonBackend",
    "sklearn": "inferd.backends.sklearn_backend:SklearnBackend",
    "onnx": "inferd.backends.onnx_backend:OnnxBackend",
    "torch": "inferd.backends.torch_backend:TorchBackend",
}

_SUFFIXES: Final[dict[str, str]] = {
    ".onnx": "onnx",
    ".joblib": "sklearn",
    ".skops": "sklearn",
    ".pkl": "sklearn",
    ".pt": "torch",
    ".pt2": "torch",
    ".py": "python",
}
MODEL_SUFFIXES: Final = frozenset(_SUFFIXES)


def backend_for_file(path: Path) -> str | None:
    """The backend that serves a model file, from its suffix; None if no backend knows it."""
    return _SUFFIXES.get(path.suffix.lower())


def create_backend(config: ModelConfig) -> Backend:
    """Instantiate (not load) the backend named by ``config.backend``."""
    target = _REGISTRY.get(config.backend)
    if target is None:
        raise ConfigError(f"model {config.name!r}: unknown backend {config.backend!r}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"model {config.name!r}: backend {config.backend!r} needs a package that is not "
            f"installed ({e.name}); install it, e.g. pip install 'inferd[{config.backend}]'"
        ) from None
    cls = getattr(module, class_name)
    backend: Backend = cls(config)
    return backend
