"""Native CPU kernels, compiled for this machine with ``[llm] compile = true``.

Only the decode attention over the dense KV rows (``csrc/decode_attention.cpp``) is native.
On K/V that comes from DRAM, as it does in a decode step, it appends and attends 1.6-1.8x as
fast as the SDPA path, reading fp32 K/V at the rate a plain sum does
(``benchmarks/decode_attention.py``; BENCHMARKS.md, issue 4). It is built
once with the machine's own C++ compiler (``-O3 -march=native``, OpenMP) into
``cache_dir()/kernels`` and loaded from there on later starts.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from inferd.config import cache_dir

logger = logging.getLogger("inferd.llm")

DecodeKernel = Callable[
    [
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        float,
    ],
    torch.Tensor,
]
"""(q [B, H, D], k_new [B, H_kv, D], v_new, keys [R, H_kv, C, D], values, lens [B] int64,
order [B] int64, scale) -> [B, H, D]: appends k_new/v_new at column ``lens[r] - 1`` of row r,
which holds sequence ``order[r]``, then attends; q, k_new, v_new and the result are in the
sequences' order, lens in the rows' (``csrc/decode_attention.cpp``)."""

HEAD_DIMS = frozenset({16, 32, 64, 80, 96, 128, 256})
"""Head sizes the kernel is compiled for; others attend through SDPA."""

_SOURCE = Path(__file__).parent / "csrc" / "decode_attention.cpp"


@functools.cache
def decode_attention_kernel() -> DecodeKernel:
    """Build (or load the cached build of) the decode attention kernel; errors propagate."""
    from torch.utils import cpp_extension

    _find_ninja()
    build = cache_dir() / "kernels" / f"torch-{torch.__version__}"
    build.mkdir(parents=True, exist_ok=True)
    module = cpp_extension.load(
        name="inferd_decode_attention",
        sources=[str(_SOURCE)],
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build),
        verbose=False,
    )
    logger.info("decode attention kernel loaded from %s", build)
    kernel: DecodeKernel = module.decode_attention
    return kernel


def kernel_applies(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether ``decode_attention_kernel`` can attend a model's decodes: CPU, fp32 or bf16
    (the dense rows hold K/V in the model's dtype), a head size it is compiled for."""
    return (
        device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and head_dim in HEAD_DIMS
    )


def _find_ninja() -> None:
    # torch's builder runs ``ninja`` from PATH; the ninja wheel (a dependency of the torch
    # extra) puts it in the environment's bin folder, which is not on PATH when the server
    # runs as ``.venv/bin/python -m inferd``.
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return  # torch's own error then says that ninja is required
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
