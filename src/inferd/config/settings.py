"""The configuration's frozen dataclasses and the values its keys accept (the keys are
documented in the package docstring)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from inferd.config.environment import default_host, default_port

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
    send_ahead: bool = True
    """Send a full batch to a busy replica to wait there, so that it never idles through the
    round trip between batches; if its clients leave before it starts, the replica skips it.
    Not in SLO mode."""


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
    compile: bool = False
    """Compile the model with torch.compile at load (instead of packing): faster steps, and
    tens of seconds more before the model is ready."""


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
