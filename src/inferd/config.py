"""Configuration: frozen dataclasses validated once at startup.

A model folder holds its files and an optional ``model.toml``::

    name = "digits"                 # default: the folder's (or file's) name
    backend = "sklearn"             # python | torch | onnx | sklearn; default: from the model file
    file = "model.joblib"           # default: the one model file in the folder
    entry_point = "model.py:Echo"   # python backend (class) or torch backend (nn.Module factory)
    instances = 1                   # copies of the model, each in a process of its own
    threads = 0                     # compute threads per copy (0: the cores shared out)
    idempotent = true               # a batch may be retried elsewhere if its replica dies
    isolation = "process"           # or "thread": in the server's process, no crash isolation
    device = "auto"                 # auto | cpu | cuda
    precision = "fp32"              # fp32 | bf16 | fp16 | int8: converted on load (torch, onnx)
    pack_weights = true             # torch on CPU: linear weights reordered once for oneDNN

    [batching]
    max_batch_size = 64             # rows per batch; 0 means the model takes no batch axis
    max_queue_delay_ms = 0.0        # how long a batch may wait to fill once a replica is free
    preferred_batch_sizes = []      # sizes dispatched at once and taken exactly
    slo_p99_ms = 0                  # a p99 target: the batcher then picks delay and size itself
    max_batch_bytes = 67108864      # input bytes per batch
    max_queue_rows = 8192           # rows allowed to wait; past it requests get 503 + Retry-After
    max_queue_bytes = 536870912     # input bytes allowed to wait, likewise
    priority_levels = 1             # requests' parameters.priority: 1 (most urgent) .. levels
    default_priority = 1
    timeout_ms = 60000              # deadline of requests that set none
    variable_dims = "group"         # or "pad": pad variable dims to the batch's longest
    pad_value = 0

    [[inputs]]                      # optional where the model file declares its signature
    name = "input"
    datatype = "FP32"
    shape = [-1, 16]                # the batch axis included, -1 for any size

    [autoscaling]                   # optional; without it, ``instances`` replicas run
    min_replicas = 1                # 0: scale to zero when idle, cold start on the next request
    max_replicas = 4
    target_ongoing_requests = 2     # in flight + queued per replica
    upscale_delay_s = 5
    downscale_delay_s = 60
    scale_to_zero_after_s = 300

    price_per_hour = 0.0            # one replica's hardware, for cost per inference

    [llm]                           # backend = "llm" (a Hugging Face checkpoint folder)
    dtype = "auto"                  # auto | float32 | bfloat16 | float16
    kv_cache_mb = 512               # KV cache memory; blocks = this / bytes per block
    block_size = 16                 # tokens per KV block
    max_num_seqs = 64               # sequences decoding together
    max_num_batched_tokens = 2048   # token budget per engine step (chunked prefill)
    enable_prefix_caching = true
    max_waiting = 256               # sequences waiting past max_num_seqs; then 503 + Retry-After
    quantization = "none"           # none | int8 (weights) | w8a8 (weights and activations)
    kv_cache_dtype = "auto"         # auto | int8 (about 3.8x the KV blocks in the same memory)
    pack_weights = true             # CPU: linear weights packed for oneDNN once, at load

    [parameters]                    # free-form, handed to a python backend's constructor

The server reads an optional ``inferd.toml`` with a ``[server]`` table (see ``ServerConfig``).
This module is the only one that reads environment variables.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from inferd.datatypes import DATATYPES
from inferd.errors import ConfigError

MODEL_CONFIG_FILE: Final = "model.toml"
BACKENDS: Final = ("python", "torch", "onnx", "sklearn", "llm")
LLM_DTYPES: Final = ("auto", "float32", "bfloat16", "float16")
LLM_QUANTIZATIONS: Final = ("none", "int8", "w8a8")
KV_CACHE_DTYPES: Final = ("auto", "int8")
DEVICES: Final = ("auto", "cpu", "cuda")
PRECISIONS: Final = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, v2 datatype and shape (batch axis included, -1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_metadata(self) -> dict[str, Any]:
        """The tensor as the v2 model metadata endpoint shows it."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How requests are grouped into batches, and how much may wait."""

    max_batch_size: int = 64
    """Most rows (items along the batch axis) in one batch; 0 disables batching."""
    max_queue_delay_ms: float = 0.0
    """Longest a batch waits to fill once a replica is free (0: go as soon as one is free)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Sizes dispatched at once, and taken exactly, before the delay runs out."""
    slo_p99_ms: float = 0.0
    """A p99 latency target; when set, the batcher picks delay and size itself (SLO mode)."""
    max_batch_bytes: int = 64 * 1024 * 1024
    """Most input bytes in one batch (a larger request is split; one request always goes)."""
    max_queue_rows: int = 8192
    """Rows that may wait; past this, requests are shed with 503 and Retry-After."""
    max_queue_bytes: int = 512 * 1024 * 1024
    """Input bytes that may wait; past this, requests are shed with 503 and Retry-After."""
    priority_levels: int = 1
    """Requests carry parameters.priority 1..levels (1 most urgent; 0 or absent = default)."""
    default_priority: int = 1
    timeout_ms: float = 60000.0
    """Deadline of a request that sets none (parameters.timeout in µs, or inferd-timeout-ms)."""
    variable_dims: str = "group"
    """Inputs whose non-batch dims vary: 'group' batches only equal shapes; 'pad' pads them."""
    pad_value: float = 0.0


@dataclass(frozen=True, slots=True)
class AutoscalingConfig:
    """Replica count bounds and how fast to follow the load (``[autoscaling]``)."""

    min_replicas: int = 1
    """0 lets an idle model scale to zero; the next request then waits for a cold start."""
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    """Requests in flight or queued per replica to aim for."""
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    scale_to_zero_after_s: float = 300.0


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """``[llm]``: how an LLM's engine spends memory and compute (backend = "llm")."""

    dtype: str = "auto"
    """auto (the checkpoint's own), float32, bfloat16 or float16."""
    kv_cache_mb: int = 512
    """Memory for the paged KV cache; the number of blocks follows from it."""
    block_size: int = 16
    """Tokens per KV block."""
    max_num_seqs: int = 64
    """Most sequences decoding together."""
    max_num_batched_tokens: int = 2048
    """Token budget of one engine step (long prompts are prefilled in chunks of it)."""
    enable_prefix_caching: bool = True
    max_waiting: int = 256
    """Sequences allowed to wait beyond ``max_num_seqs``; past it, 503 with Retry-After."""
    quantization: str = "none"
    """none; int8 (weights, per-channel scales); w8a8 (int8 weights and activations)."""
    kv_cache_dtype: str = "auto"
    """auto (the model's dtype) or int8 (a scale per token and head: ~3.8x the blocks)."""
    pack_weights: bool = True
    """CPU: reorder fp32/bf16 linear weights once for oneDNN (fp32 keeps a plain copy too)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything inferd knows about one model before loading it."""

    name: str
    path: Path
    """The model's folder."""
    backend: str
    file: str | None = None
    """The model file, relative to ``path``."""
    entry_point: str | None = None
    """``module.py:Name`` in the folder or ``package.module:Name`` on the Python path."""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    instances: int = 1
    threads: int = 0
    """Compute threads per instance; 0 = the cores divided among the instances."""
    idempotent: bool = True
    """Whether a batch may be retried on another replica when its replica dies."""
    isolation: str = "process"
    """process: each instance in a process of its own; thread: in the server's process."""
    autoscaling: AutoscalingConfig | None = None
    """None: a fixed number of ``instances``."""
    price_per_hour: float | None = None
    """What one replica's hardware costs per hour; None: the server's price."""
    device: str = "auto"
    precision: str = "fp32"
    """fp32 serves the model as it is; bf16, fp16 and int8 convert it on load (inferd.optimize)."""
    pack_weights: bool = True
    """torch on CPU: reorder linear weights once at load into oneDNN's layout (faster batches,
    one more copy of those weights in memory)."""
    version: str = "1"
    parameters: dict[str, Any] = field(default_factory=dict)
    llm: LLMSettings = field(default_factory=LLMSettings)
    source: Path | None = None
    """The config file this came from, for error messages; None when everything was inferred."""

    @property
    def batched(self) -> bool:
        """Whether the model's tensors carry a leading batch axis."""
        return self.batching.max_batch_size > 0

    def with_signature(
        self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> ModelConfig:
        """A copy with the signature completed (the declared one wins where both exist)."""
        return dataclasses.replace(
            self, inputs=self.inputs or inputs, outputs=self.outputs or outputs
        )


def default_host() -> str:
    """The address to listen on: ``INFERD_HOST`` or loopback."""
    return os.environ.get("INFERD_HOST", "127.0.0.1")


def default_port() -> int:
    """The port to listen on: ``INFERD_PORT`` or 8000."""
    return int(os.environ.get("INFERD_PORT", "8000"))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. under taskset or a container quota)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_dir() -> Path:
    """Where inferd caches what it builds (the demo repository): ``INFERD_CACHE_DIR``."""
    base = os.environ.get("INFERD_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inferd"


def demo_llm_enabled() -> bool:
    """Whether the demo repository includes the LLM it trains on first start: ``INFERD_DEMO_LLM``.

    On by default (it needs the torch extra and transformers); ``0`` (or ``false``, ``no``,
    ``off``) leaves it out, saving the minutes its first training takes.
    """
    value = os.environ.get("INFERD_DEMO_LLM", "1").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"INFERD_DEMO_LLM = {value!r}: expected 1 or 0")


def demo_llm_train_seconds() -> float:
    """How long the demo LLM trains when first built: ``INFERD_DEMO_LLM_TRAIN_S`` (180 s).

    Part of the demo's cache tag, so a new budget trains (and caches) a new model.
    """
    raw = os.environ.get("INFERD_DEMO_LLM_TRAIN_S", "180")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ConfigError(f"INFERD_DEMO_LLM_TRAIN_S = {raw!r}: expected seconds > 0")
    return seconds


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP front end's settings (``[server]`` in ``inferd.toml``)."""

    host: str = field(default_factory=default_host)
    port: int = field(default_factory=default_port)
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted; larger ones get 413."""
    log_level: str = "info"
    price_per_hour: float = 0.0
    """What one replica's hardware costs per hour, for models that set no price."""


# --- validation ----------------------------------------------------------------------------


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
