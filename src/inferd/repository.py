"""Model discovery: command-line paths to model configs, and loading one model.

Each path is a model file (``model.onnx``), a model folder (one with ``model.toml``, with one
model file, or a Hugging Face LLM checkpoint: ``config.json`` and ``*.safetensors``) or a
repository (a folder of model folders; hidden ``.x`` and ``_x`` folders are skipped). A broken
model folder becomes a ``ModelEntry`` with an ``error``, so the others still serve; a missing
path or two models with one name are command-line mistakes and raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from inferd.backends.base import MODEL_SUFFIXES, Backend, backend_for_file, create_backend
from inferd.config import (
    BACKENDS,
    MODEL_CONFIG_FILE,
    ModelConfig,
    model_config_from_dict,
    read_toml,
)
from inferd.errors import ConfigError, InferdError
from inferd.optimize import create_optimized_backend, is_optimized_copy

DEFAULT_PYTHON_FILE: Final = "model.py"
_SUFFIX_LIST: Final = ", ".join(sorted(MODEL_SUFFIXES))


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model found on disk: its config, or (config None) why it cannot be served."""

    name: str
    config: ModelConfig | None
    error: str | None = None


def discover(paths: Sequence[Path]) -> list[ModelEntry]:
    """The models at ``paths``; ``ConfigError`` for a missing path or a duplicate name."""
    found: list[tuple[ModelEntry, Path]] = []
    for path in paths:
        found.extend(_discover_path(Path(path)))
    seen: dict[str, Path] = {}
    for entry, where in found:
        if entry.name in seen:
            raise ConfigError(
                f"two models are named {entry.name!r}: {seen[entry.name]} and {where}; "
                f"rename one (name = '...' in its {MODEL_CONFIG_FILE})"
            )
        seen[entry.name] = where
    return [entry for entry, _ in found]


def load_model(config: ModelConfig) -> tuple[Backend, ModelConfig]:
    """Create and load the model's backend; returns it with the config's signature completed."""
    # At another precision the model is converted on load (inferd.optimize), logging a report.
    backend = (
        create_backend(config) if config.precision == "fp32" else create_optimized_backend(config)
    )
    try:
        backend.load()
        inputs, outputs = backend.signature()
    except InferdError:
        raise
    except Exception as e:
        raise ConfigError(
            f"model {config.name!r}: cannot load {_describe(config)}: {type(e).__name__}: {e}"
        ) from e
    completed = config.with_signature(inputs, outputs)
    _check_signature(completed)
    return backend, completed


# --- discovery -------------------------------------------------------------------------------


def _discover_path(path: Path) -> list[tuple[ModelEntry, Path]]:
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_file():
        return [(_file_entry(path), path)]
    if _is_model_folder(path):
        return [(_folder_entry(path), path)]
    folders = [
        p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))
    ]
    if not folders:
        raise ConfigError(
            f"{path}: no model found; expected a model file ({_SUFFIX_LIST}), a model folder "
            f"(with {MODEL_CONFIG_FILE} or one model file) or a folder of model folders"
        )
    return [(_folder_entry(folder), folder) for folder in folders]


def _file_entry(path: Path) -> ModelEntry:
    backend = backend_for_file(path)
    if backend is None:
        raise ConfigError(f"{path}: not a model file; expected a file ending in {_SUFFIX_LIST}")
    config = ModelConfig(name=path.stem, path=path.parent, backend=backend, file=path.name)
    return ModelEntry(config.name, config)


def _is_model_folder(folder: Path) -> bool:
    return (
        (folder / MODEL_CONFIG_FILE).is_file()
        or bool(_model_files(folder))
        or is_llm_checkpoint(folder)
    )


def is_llm_checkpoint(folder: Path) -> bool:
    """A Hugging Face checkpoint folder: ``config.json`` beside ``*.safetensors`` weights."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _folder_entry(folder: Path) -> ModelEntry:
    try:
        config = _folder_config(folder)
    except ConfigError as e:
        return ModelEntry(_declared_name(folder), None, e.message)
    return ModelEntry(config.name, config)


def _folder_config(folder: Path) -> ModelConfig:
    toml = folder / MODEL_CONFIG_FILE
    source = toml if toml.is_file() else None
    data = read_toml(toml) if source else {}
    kwargs = model_config_from_dict(data, folder, folder.name, source or folder)
    if kwargs["backend"] is None and kwargs["file"] is None and is_llm_checkpoint(folder):
        kwargs["backend"] = "llm"
    if kwargs["backend"] == "llm":
        return ModelConfig(**kwargs, source=source)  # the folder is the model
    # A backend and an entry point are enough: the model may need no file of its own.
    needs_file = kwargs["backend"] is None or kwargs["entry_point"] is None
    if kwargs["file"] is None:
        try:
            kwargs["file"] = _find_model_file(folder)
        except ConfigError:
            if needs_file:
                raise
    if kwargs["backend"] is None:
        kwargs["backend"] = _infer_backend(folder, kwargs)
    return ModelConfig(**kwargs, source=source)


def _infer_backend(folder: Path, kwargs: dict[str, Any]) -> str:
    file = kwargs["file"]
    if file is None:
        raise ConfigError(
            f"{folder}: no model file found; expected one file ending in {_SUFFIX_LIST}, "
            f"or a {MODEL_CONFIG_FILE} with backend and entry_point"
        )
    backend = backend_for_file(Path(file))
    if backend is None:
        raise ConfigError(
            f"{folder / MODEL_CONFIG_FILE}: cannot tell the backend of {file!r} from its name; "
            f"set backend = one of {', '.join(BACKENDS)}"
        )
    return backend


def _find_model_file(folder: Path) -> str | None:
    """The folder's one model file; Python files count only when there is no other model file."""
    files = _model_files(folder)
    candidates = [f for f in files if f.suffix.lower() != ".py"] or files
    if len(candidates) > 1 and any(f.name == DEFAULT_PYTHON_FILE for f in candidates):
        candidates = [f for f in candidates if f.name == DEFAULT_PYTHON_FILE]
    if len(candidates) > 1:
        names = ", ".join(f.name for f in candidates)
        raise ConfigError(
            f"{folder}: several model files ({names}); choose one with file = '...' "
            f"in {folder / MODEL_CONFIG_FILE}"
        )
    return candidates[0].name if candidates else None


def _model_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith((".", "_"))
    ]
    # model.int8.onnx beside model.onnx is inferd's converted copy, not a second model.
    return [p for p in files if not is_optimized_copy(p, files)]


def _declared_name(folder: Path) -> str:
    """The name a broken folder's model.toml gives, where it can be read; else the folder's."""
    toml = folder / MODEL_CONFIG_FILE
    try:
        name = read_toml(toml).get("name") if toml.is_file() else None
    except ConfigError:
        return folder.name
    return name if isinstance(name, str) and name and "/" not in name else folder.name


# --- loading ---------------------------------------------------------------------------------


def _describe(config: ModelConfig) -> str:
    if config.file is not None:
        return str(config.path / config.file)
    return config.entry_point or str(config.path)


def _check_signature(config: ModelConfig) -> None:
    toml = config.source or config.path / MODEL_CONFIG_FILE
    for kind, specs in (("inputs", config.inputs), ("outputs", config.outputs)):
        if not specs:
            raise ConfigError(
                f"model {config.name!r}: the model does not declare its {kind}; "
                f"add [[{kind}]] to {toml}"
            )
    if not config.batched:
        return
    for kind, specs in (("input", config.inputs), ("output", config.outputs)):
        for spec in specs:
            if not spec.shape:
                raise ConfigError(
                    f"model {config.name!r}: {kind} {spec.name!r} has no dimensions, but "
                    f"batching is on (max_batch_size = {config.batching.max_batch_size}); "
                    f"give it a leading batch dimension (-1) or set [batching] "
                    f"max_batch_size = 0 in {toml}"
                )
