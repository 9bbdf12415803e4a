"""``model.toml`` and ``inferd.toml`` read into the settings, validated once, with errors
that name the file and the dotted key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from inferd.config.settings import (
    BACKENDS,
    DEVICES,
    KV_CACHE_DTYPES,
    LLM_DTYPES,
    LLM_QUANTIZATIONS,
    PRECISIONS,
    AutoscalingConfig,
    BatchingConfig,
    LLMSettings,
    ServerConfig,
    TensorSpec,
)
from inferd.datatypes import DATATYPES
from inferd.errors import ConfigError


class _Table:
    """A TOML table read with errors that name the file and the dotted key."""

    def __init__(self, data: dict[str, Any], source: Path | str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self._read: set[str] = set()

    def error(self, key: str, expected: str) -> ConfigError:
        value = self.data.get(key)
        return ConfigError(
            f"{self.source}: key '{self.prefix}{key}' = {value!r}: expected {expected}"
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
        self._read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; a TOML ``true`` is never a valid count.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, expected)
        if not isinstance(value, kind):
            raise self.error(key, expected)
        return value

    def table(self, key: str) -> _Table:
        raw = self.get(key, dict, {}, "a table")
        return _Table(raw, self.source, f"{self.prefix}{key}.")

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            allowed = ", ".join(sorted(self._read))
            raise ConfigError(
                f"{self.source}: unknown key '{self.prefix}{unknown[0]}'; allowed here: {allowed}"
            )


def _read_tensors(table: _Table, key: str) -> tuple[TensorSpec, ...]:
    raw = table.get(key, list, [], "an array of tables [[" + key + "]]")
    specs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise table.error(key, "an array of tables with name, datatype and shape")
        sub = _Table(item, table.source, f"{table.prefix}{key}[{i}].")
        name = sub.get("name", str, None, "a tensor name (string)")
        if not name:
            raise sub.error("name", "a non-empty tensor name")
        datatype = sub.get("datatype", str, None, "one of " + ", ".join(sorted(DATATYPES)))
        if datatype not in DATATYPES:
            raise sub.error("datatype", "one of " + ", ".join(sorted(DATATYPES)))
        shape = sub.get("shape", list, None, "a list of dimensions, -1 for variable")
        if shape is None or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d >= 0) for d in shape
        ):
            raise sub.error("shape", "a list of dimensions (integers >= 0, or -1 for variable)")
        sub.reject_unknown()
        specs.append(TensorSpec(name=name, datatype=datatype, shape=tuple(shape)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise table.error(key, "tensors with distinct names")
    return tuple(specs)


def _read_autoscaling(table: _Table) -> AutoscalingConfig | None:
    if "autoscaling" not in table.data:
        table.get("autoscaling", dict, None, "a table")
        return None
    sub = table.table("autoscaling")
    values: dict[str, Any] = {
        "min_replicas": _count(sub, "min_replicas", 1, 0, "0 allows scaling to zero"),
        "max_replicas": _count(sub, "max_replicas", 1, 1, "most replicas"),
        "target_ongoing_requests": _number(sub, "target_ongoing_requests", 2.0),
        "upscale_delay_s": _number(sub, "upscale_delay_s", 5.0),
        "downscale_delay_s": _number(sub, "downscale_delay_s", 60.0),
        "scale_to_zero_after_s": _number(sub, "scale_to_zero_after_s", 300.0),
    }
    if values["max_replicas"] < values["min_replicas"]:
        raise sub.error("max_replicas", "an integer >= min_replicas")
    if values["target_ongoing_requests"] <= 0:
        raise sub.error("target_ongoing_requests", "a number > 0")
    sub.reject_unknown()
    return AutoscalingConfig(**values)


def _optional_number(t: _Table, key: str) -> float | None:
    if key not in t.data:
        t.get(key, (int, float), None, "a number >= 0")
        return None
    return _number(t, key, 0.0)


def _read_isolation(table: _Table) -> str:
    isolation = table.get("isolation", str, "process", "'process' or 'thread'")
    if isolation not in ("process", "thread"):
        raise table.error("isolation", "'process' or 'thread'")
    return str(isolation)


def _read_batching(table: _Table) -> BatchingConfig:
    sub = table.table("batching")
    values = {
        "max_batch_size": _count(sub, "max_batch_size", 64, 0, "rows per batch; 0 = no batching"),
        "max_queue_delay_ms": _number(sub, "max_queue_delay_ms", 0.0),
        "slo_p99_ms": _number(sub, "slo_p99_ms", 0.0),
        "max_batch_bytes": _count(sub, "max_batch_bytes", 64 << 20, 1, "bytes per batch"),
        "max_queue_rows": _count(sub, "max_queue_rows", 8192, 1, "rows allowed to wait"),
        "max_queue_bytes": _count(sub, "max_queue_bytes", 512 << 20, 1, "bytes allowed to wait"),
        "priority_levels": _count(sub, "priority_levels", 1, 1, "number of priority levels"),
        "default_priority": _count(sub, "default_priority", 1, 1, "a level 1..priority_levels"),
        "timeout_ms": _number(sub, "timeout_ms", 60000.0),
        "pad_value": _number(sub, "pad_value", 0.0),
        "preferred_batch_sizes": _sizes(sub),
        "variable_dims": sub.get("variable_dims", str, "group", "'group' or 'pad'"),
        "send_ahead": sub.get("send_ahead", bool, True, "true or false"),
    }
    if values["variable_dims"] not in ("group", "pad"):
        raise sub.error("variable_dims", "'group' or 'pad'")
    if values["default_priority"] > values["priority_levels"]:
        raise sub.error("default_priority", "a level between 1 and priority_levels")
    sub.reject_unknown()
    return BatchingConfig(**values)


def _read_llm(table: _Table) -> LLMSettings:
    sub = table.table("llm")
    dtype = sub.get("dtype", str, "auto", "one of " + ", ".join(LLM_DTYPES))
    if dtype not in LLM_DTYPES:
        raise sub.error("dtype", "one of " + ", ".join(LLM_DTYPES))
    settings = LLMSettings(
        dtype=dtype,
        kv_cache_mb=_count(sub, "kv_cache_mb", 512, 1, "MiB for the KV cache"),
        block_size=_count(sub, "block_size", 16, 1, "tokens per KV block"),
        max_num_seqs=_count(sub, "max_num_seqs", 64, 1, "sequences decoding together"),
        max_num_batched_tokens=_count(
            sub, "max_num_batched_tokens", 2048, 1, "token budget of one step"
        ),
        enable_prefix_caching=sub.get("enable_prefix_caching", bool, True, "true or false"),
        max_waiting=_count(sub, "max_waiting", 256, 0, "sequences waiting past max_num_seqs"),
        quantization=_choice(sub, "quantization", "none", LLM_QUANTIZATIONS),
        kv_cache_dtype=_choice(sub, "kv_cache_dtype", "auto", KV_CACHE_DTYPES),
        pack_weights=sub.get("pack_weights", bool, True, "true or false"),
        compile=sub.get("compile", bool, False, "true or false"),
    )
    sub.reject_unknown()
    return settings


def _choice(t: _Table, key: str, default: str, choices: tuple[str, ...]) -> str:
    value: str = t.get(key, str, default, "one of " + ", ".join(choices))
    if value not in choices:
        raise t.error(key, "one of " + ", ".join(choices))
    return value


def _count(t: _Table, key: str, default: int, minimum: int, what: str) -> int:
    value: int = t.get(key, int, default, f"an integer >= {minimum} ({what})")
    if value < minimum:
        raise t.error(key, f"an integer >= {minimum} ({what})")
    return value


def _number(t: _Table, key: str, default: float) -> float:
    value = t.get(key, (int, float), default, "a number >= 0")
    if value < 0:
        raise t.error(key, "a number >= 0")
    return float(value)


def _sizes(t: _Table) -> tuple[int, ...]:
    sizes = t.get("preferred_batch_sizes", list, [], "a list of batch sizes (integers >= 1)")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        raise t.error("preferred_batch_sizes", "a list of batch sizes (integers >= 1)")
    return tuple(sorted(set(sizes)))


def model_config_from_dict(
    data: dict[str, Any], folder: Path, default_name: str, source: Path | str
) -> dict[str, Any]:
    """Validate a model table; returns ModelConfig's keyword arguments (backend may be None)."""
    t = _Table(data, source)
    name = t.get("name", str, default_name, "a model name (string)")
    if not name or "/" in name:
        raise t.error("name", "a non-empty model name without '/'")
    backend = t.get("backend", str, None, "one of " + ", ".join(BACKENDS))
    if backend is not None and backend not in BACKENDS:
        raise t.error("backend", "one of " + ", ".join(BACKENDS))
    model_file = t.get("file", str, None, "a file name in the model folder")
    if model_file is not None and not (folder / model_file).exists():
        raise t.error("file", f"a file that exists in {folder}")
    instances = t.get("instances", int, 1, "an integer >= 1")
    if instances < 1:
        raise t.error("instances", "an integer >= 1")
    threads = t.get("threads", int, 0, "an integer >= 0 (0 = automatic)")
    if threads < 0:
        raise t.error("threads", "an integer >= 0 (0 = automatic)")
    device = t.get("device", str, "auto", "one of " + ", ".join(DEVICES))
    if device not in DEVICES:
        raise t.error("device", "one of " + ", ".join(DEVICES))
    precision = t.get("precision", str, "fp32", "one of " + ", ".join(PRECISIONS))
    if precision not in PRECISIONS:
        raise t.error("precision", "one of " + ", ".join(PRECISIONS))
    kwargs = {
        "name": name,
        "path": folder,
        "backend": backend,
        "file": model_file,
        "entry_point": t.get("entry_point", str, None, "'module.py:Name' or 'pkg.module:Name'"),
        "instances": instances,
        "threads": threads,
        "idempotent": t.get("idempotent", bool, True, "true or false"),
        "isolation": _read_isolation(t),
        "autoscaling": _read_autoscaling(t),
        "price_per_hour": _optional_number(t, "price_per_hour"),
        "device": device,
        "precision": precision,
        "pack_weights": t.get("pack_weights", bool, True, "true or false"),
        "version": str(t.get("version", (str, int), "1", "a version (string or integer)")),
        "batching": _read_batching(t),
        "inputs": _read_tensors(t, "inputs"),
        "outputs": _read_tensors(t, "outputs"),
        "parameters": t.get("parameters", dict, {}, "a table of free-form parameters"),
        "llm": _read_llm(t),
    }
    t.reject_unknown()
    return kwargs


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors become ``ConfigError`` naming the file."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def load_server_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read ``[server]`` from ``path`` (if given) and apply command-line overrides (not None)."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
        top = _Table(data, path)
        t = top.table("server")
        top.reject_unknown()
        for key, kind, expected in (
            ("host", str, "a host name or address"),
            ("port", int, "a port number 0-65535"),
            ("max_body_bytes", int, "a number of bytes > 0"),
            ("log_level", str, "one of critical, error, warning, info, debug"),
            ("price_per_hour", (int, float), "a price per replica-hour >= 0"),
        ):
            if key in t.data:
                values[key] = t.get(key, kind, None, expected)
        t.reject_unknown()
        _check_server_values(values, t)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerConfig(**values)


def _check_server_values(values: dict[str, Any], t: _Table) -> None:
    if "port" in values and not 0 <= values["port"] <= 65535:
        raise t.error("port", "a port number 0-65535")
    if "max_body_bytes" in values and values["max_body_bytes"] <= 0:
        raise t.error("max_body_bytes", "a number of bytes > 0")
    levels = ("critical", "error", "warning", "info", "debug")
    if "log_level" in values and values["log_level"] not in levels:
        raise t.error("log_level", "one of " + ", ".join(levels))
