"""The python backend: a user class with ``predict(dict of arrays) -> dict of arrays``.

The class comes from ``entry_point`` (``model.py:Name`` or ``package.module:Name``); without one,
from the one class that defines ``predict`` in ``file`` (when it is a ``.py`` file) or ``model.py``.
It is built with ``**parameters`` when its constructor takes arguments, then ``load()`` is called
if it has one. Class attributes ``inputs`` / ``outputs`` (lists of ``TensorSpec`` or of dicts with
name, datatype and shape) declare its signature.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from inferd.backends.base import Tensors
from inferd.backends.loader import call_with_parameters, load_attribute, load_module_file
from inferd.config import ModelConfig, TensorSpec, model_config_from_dict
from inferd.errors import ConfigError, ModelError, ModelNotReady

DEFAULT_FILE = "model.py"


class PythonBackend:
    """Serves an instance of a user-written Python class."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._model: Any = None

    def load(self) -> None:
        """Import the class, instantiate it and call its ``load()`` if it has one."""
        cls = self._resolve_class()
        model = call_with_parameters(self.config, cls)
        if not callable(getattr(model, "predict", None)):
            raise ConfigError(f"model {self.config.name!r}: {cls.__qualname__} has no predict()")
        load = getattr(model, "load", None)
        if callable(load):
            load()
        self._model = model

    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The class's ``inputs`` / ``outputs`` attributes, or empty where it has none."""
        if self._model is None:
            return (), ()
        declared = {
            key: [_spec_dict(self.config, item) for item in getattr(self._model, key)]
            for key in ("inputs", "outputs")
            if isinstance(getattr(self._model, key, None), list | tuple)
        }
        if not declared:
            return (), ()
        source = f"{self.config.path}: class {type(self._model).__qualname__}"
        kwargs = model_config_from_dict(declared, self.config.path, self.config.name, source)
        inputs: tuple[TensorSpec, ...] = kwargs["inputs"]
        outputs: tuple[TensorSpec, ...] = kwargs["outputs"]
        return inputs, outputs

    def predict(self, inputs: Tensors) -> Tensors:
        """Call the user's ``predict``; its values become arrays."""
        if self._model is None:
            raise ModelNotReady(f"model {self.config.name!r} is not loaded")
        outputs = self._model.predict(inputs)
        if not isinstance(outputs, dict):
            raise ModelError(
                f"model {self.config.name!r}: predict() returned {type(outputs).__name__}, "
                "expected a dict of output name -> array"
            )
        return {str(name): np.asarray(value) for name, value in outputs.items()}

    def _resolve_class(self) -> type:
        config = self.config
        if config.entry_point is not None:
            cls = load_attribute(config, config.entry_point)
            if not inspect.isclass(cls):
                raise ConfigError(
                    f"model {config.name!r}: entry_point {config.entry_point!r} "
                    f"is a {type(cls).__name__}, expected a class"
                )
            return cls
        file = config.file if config.file and config.file.endswith(".py") else DEFAULT_FILE
        path = config.path / file
        module = load_module_file(config, path)
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and callable(getattr(obj, "predict", None))
        ]
        if len(classes) != 1:
            found = ", ".join(c.__name__ for c in classes) or "none"
            raise ConfigError(
                f"model {config.name!r}: {path} must define exactly one class with a predict() "
                f"method (found: {found}); or set entry_point = '{file}:ClassName'"
            )
        return classes[0]


def _spec_dict(config: ModelConfig, item: object) -> dict[str, Any]:
    """A TensorSpec or a {name, datatype, shape} dict, as the dict model.toml would hold."""
    if isinstance(item, TensorSpec):
        return item.to_metadata()
    if isinstance(item, dict):
        shape = item.get("shape")
        return {**item, "shape": list(shape)} if isinstance(shape, tuple) else dict(item)
    raise ConfigError(
        f"model {config.name!r}: the class's inputs/outputs must be TensorSpec objects or "
        f"dicts with name, datatype and shape, not {type(item).__name__}"
    )
