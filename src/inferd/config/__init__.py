"""Configuration: frozen dataclasses validated once at startup.

``settings`` holds the dataclasses, ``files`` reads ``model.toml`` and ``inferd.toml`` into
them (errors name the file and key), ``environment`` the defaults taken from the environment.

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
    send_ahead = true               # a full batch may wait at a busy replica (no idle gap)

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
    compile = false                 # torch.compile the model at load: faster, slower to start

    [parameters]                    # free-form, handed to a python backend's constructor

The server reads an optional ``inferd.toml`` with a ``[server]`` table (see ``ServerConfig``).
``environment`` is the only module that reads environment variables.
"""

from inferd.config.environment import (
    cache_dir,
    default_host,
    default_port,
    demo_llm_enabled,
    demo_llm_train_seconds,
    usable_cpus,
)
from inferd.config.files import load_server_config, model_config_from_dict, read_toml
from inferd.config.settings import (
    BACKENDS,
    DEVICES,
    KV_CACHE_DTYPES,
    LLM_DTYPES,
    LLM_QUANTIZATIONS,
    MODEL_CONFIG_FILE,
    PRECISIONS,
    AutoscalingConfig,
    BatchingConfig,
    LLMSettings,
    ModelConfig,
    ServerConfig,
    TensorSpec,
)

__all__ = [
    "BACKENDS",
    "DEVICES",
    "KV_CACHE_DTYPES",
    "LLM_DTYPES",
    "LLM_QUANTIZATIONS",
    "MODEL_CONFIG_FILE",
    "PRECISIONS",
    "AutoscalingConfig",
    "BatchingConfig",
    "LLMSettings",
    "ModelConfig",
    "ServerConfig",
    "TensorSpec",
    "cache_dir",
    "default_host",
    "default_port",
    "demo_llm_enabled",
    "demo_llm_train_seconds",
    "load_server_config",
    "model_config_from_dict",
    "read_toml",
    "usable_cpus",
]
