"""The scikit-learn backend: an estimator saved with joblib (.joblib, .pkl) or skops (.skops).

Signature, read from the estimator: one input ``input`` (FP32, ``[-1, n_features_in_]``) and the
outputs ``label`` (``predict``) and, for classifiers with ``predict_proba``, ``probabilities``
(FP32, ``[-1, n_classes]``). A single input declared in ``model.toml`` replaces ``input``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np

from inferd.backends.base import Tensors
from inferd.backends.loader import model_file
from inferd.config import ModelConfig, TensorSpec
from inferd.datatypes import to_numpy_dtype
from inferd.errors import ConfigError, InvalidRequest, ModelNotReady

# Top-level packages whose types a .skops file may contain without anyone vetting them.
TRUSTED_SKOPS_PACKAGES: Final = frozenset({"sklearn", "numpy"})

_LABEL_DATATYPES: Final = {"i": "INT64", "u": "INT64", "b": "BOOL", "f": "FP64"}


class SklearnBackend:
    """Serves a fitted scikit-learn estimator or pipeline."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._estimator: Any = None
        self._input = TensorSpec("input", "FP32", (-1, -1))
        self._outputs: tuple[TensorSpec, ...] = ()

    def load(self) -> None:
        """Load the estimator and read its signature."""
        path = model_file(self.config)
        estimator = _load_estimator(self.config.name, path)
        if not callable(getattr(estimator, "predict", None)):
            raise ConfigError(
                f"model {self.config.name!r}: {path} holds a {type(estimator).__name__}, "
                "which has no predict()"
            )
        self._input = self._input_spec(estimator)
        self._outputs = _output_specs(estimator)
        self._estimator = estimator

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The input and the outputs read from the estimator (empty before ``load``)."""
        if self._estimator is None:
            return (), ()
        return (self._input,), self._outputs

    def predict(self, inputs: Tensors) -> Tensors:
        """``label`` from ``predict`` and, where available, ``probabilities``."""
        if self._estimator is None:
            raise ModelNotReady(f"model {self.config.name!r} is not loaded")
        x = inputs.get(self._input.name)
        if x is None:
            raise InvalidRequest(f"model {self.config.name!r} needs input {self._input.name!r}")
        x = x.astype(to_numpy_dtype(self._input.datatype), copy=False)
        label = self._outputs[0]
        outputs = {label.name: _as_datatype(self._estimator.predict(x), label.datatype)}
        if len(self._outputs) > 1:
            outputs["probabilities"] = self._estimator.predict_proba(x).astype(
                np.float32, copy=False
            )
        return outputs

    def _input_spec(self, estimator: Any) -> TensorSpec:
        declared = self.config.inputs
        if len(declared) > 1:
            raise ConfigError(
                f"model {self.config.name!r}: a scikit-learn model takes one input, but "
                f"{len(declared)} are declared ({', '.join(s.name for s in declared)})"
            )
        if declared:
            return declared[0]
        n_features = getattr(estimator, "n_features_in_", -1)
        return TensorSpec("input", "FP32", (-1, int(n_features)))


def _load_estimator(model_name: str, path: Path) -> Any:
    if path.suffix.lower() == ".skops":
        return _load_skops(model_name, path)
    import joblib

    return joblib.load(path)


def _load_skops(model_name: str, path: Path) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    rejected = [t for t in untrusted if t.split(".")[0] not in TRUSTED_SKOPS_PACKAGES]
    if rejected:
        raise ConfigError(
            f"model {model_name!r}: {path} contains types that inferd does not trust: "
            f"{', '.join(rejected)}; only scikit-learn and numpy types are loaded from .skops "
            "files (save the model with joblib if you trust its source)"
        )
    return skops.io.load(path, trusted=untrusted)


def _output_specs(estimator: Any) -> tuple[TensorSpec, ...]:
    n_outputs = int(getattr(estimator, "n_outputs_", 1))
    label_shape = (-1,) if n_outputs == 1 else (-1, n_outputs)
    classes = getattr(estimator, "classes_", None)
    if classes is None:  # a regressor: scikit-learn predicts float64
        return (TensorSpec("label", "FP64", label_shape),)
    # A multi-output classifier has one array of classes per output; they share a dtype.
    first = np.asarray(classes[0] if isinstance(classes, list) else classes)
    label = TensorSpec("label", _LABEL_DATATYPES.get(first.dtype.kind, "BYTES"), label_shape)
    if n_outputs != 1 or not hasattr(estimator, "predict_proba"):
        return (label,)
    return label, TensorSpec("probabilities", "FP32", (-1, len(first)))


def _as_datatype(values: np.ndarray, datatype: str) -> np.ndarray:
    if datatype != "BYTES":
        return np.asarray(values).astype(to_numpy_dtype(datatype), copy=False)
    flat = [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(values).ravel()]
    return np.array(flat, dtype=object).reshape(np.shape(values))
