"""What the backends share to find a model's files and import the user's Python code.

An entry point is ``file.py:Name`` (a file in the model folder, imported by path) or
``package.module:Name`` (imported from the Python path).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from inferd.config import MODEL_CONFIG_FILE, ModelConfig
from inferd.errors import ConfigError


def model_file(config: ModelConfig) -> Path:
    """The model's file (``config.file`` in its folder); ``ConfigError`` if unset or missing."""
    if config.file is None:
        raise ConfigError(
            f"model {config.name!r}: no model file; set file in {config.path / MODEL_CONFIG_FILE}"
        )
    path = config.path / config.file
    if not path.is_file():
        raise ConfigError(f"model {config.name!r}: model file {path} not found")
    return path


def load_attribute(config: ModelConfig, entry_point: str) -> Any:
    """Resolve ``file.py:Name`` or ``package.module:Name`` to the object it names."""
    module_part, sep, attr = entry_point.partition(":")
    if not sep or not module_part or not attr or ":" in attr:
        raise ConfigError(
            f"model {config.name!r}: entry_point {entry_point!r}: expected "
            "'file.py:Name' (a file in the model folder) or 'package.module:Name'"
        )
    if module_part.endswith(".py"):
        module = load_module_file(config, config.path / module_part)
        where = str(config.path / module_part)
    else:
        module = _import_module(config, module_part)
        where = module_part
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"model {config.name!r}: {where} defines no {attr!r}") from None


def load_module_file(config: ModelConfig, path: Path) -> ModuleType:
    """Import a Python file by path under a unique name (two models may both have model.py).

    The file becomes a module of a private package whose path is the model folder, so
    ``from . import helpers`` works without putting the folder on ``sys.path``.
    """
    if not path.is_file():
        raise ConfigError(f"model {config.name!r}: {path} not found")
    package = _folder_package(config.name, path.parent)
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model {config.name!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as a normal import does (dataclasses and pickle look it up).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise ConfigError(
            f"model {config.name!r}: {path}: syntax error on line {e.lineno}: {e.msg}"
        ) from None
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(
            f"model {config.name!r}: importing {path} failed: {type(e).__name__}: {e}"
        ) from e
    return module


def _folder_package(model_name: str, folder: Path) -> str:
    safe = re.sub(r"\W", "_", model_name)
    name = f"_inferd_model_{safe}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    assert spec is not None  # spec_from_loader only returns None for a missing loader.origin
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    return name


def _import_module(config: ModelConfig, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except SyntaxError as e:
        raise ConfigError(
            f"model {config.name!r}: module {module_name!r}: syntax error in {e.filename} "
            f"on line {e.lineno}: {e.msg}"
        ) from None
    except Exception as e:
        raise ConfigError(
            f"model {config.name!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from e


def call_with_parameters(config: ModelConfig, factory: Callable[..., Any]) -> Any:
    """Call ``factory(**config.parameters)``, or ``factory()`` if it takes no arguments.

    Parameters that the factory's signature cannot bind raise ``ConfigError``.
    """
    params = config.parameters
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return factory(**params)
    if not params or not signature.parameters:
        return factory()
    try:
        signature.bind(**params)
    except TypeError as e:
        where = config.source or config.path / MODEL_CONFIG_FILE
        raise ConfigError(
            f"model {config.name!r}: [parameters] in {where} do not fit "
            f"{getattr(factory, '__qualname__', factory)}{signature}: {e}"
        ) from None
    return factory(**params)
