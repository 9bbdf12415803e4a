"""ModelRunner: owns the model and the KV cache tensor, and computes one scheduled step.

The only engine module, besides the models and attention, that touches torch devices: the
scheduler plans in plain Python, the runner turns its plan into tensors on the model's device
and returns the logits of the rows that sample. Sampling is the engine's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from inferd.backends.torch_packing import packing_available
from inferd.errors import ConfigError
from inferd.llm.attention import (
    allocate_kv_cache,
    allocate_kv_scales,
    build_attention_batch,
    step_context,
)
from inferd.llm.checkpoint import ModelArchConfig
from inferd.llm.decode_cache import DecodeCache
from inferd.llm.kernels import DecodeKernel, decode_attention_kernel, kernel_applies
from inferd.llm.models import resolve_dtype
from inferd.llm.packed import pack_linears
from inferd.llm.quant import load_checkpoint
from inferd.llm.scheduler import SchedulerOutput

logger = logging.getLogger("inferd.llm")


class RunnerStep(NamedTuple):
    """One computed step: fp32 logits [N, vocab] and the request each row samples for."""

    logits: torch.Tensor
    request_ids: tuple[str, ...]


def kv_block_bytes(arch: ModelArchConfig, block_size: int, dtype: torch.dtype | str) -> int:
    """Bytes one KV block takes: K and V of ``block_size`` tokens in every layer.

    ``int8``: int8 K and V plus an fp32 scale per token and head.
    """
    vectors = 2 * arch.num_layers * block_size * arch.num_kv_heads
    if dtype in (torch.int8, "int8"):
        return vectors * (arch.head_dim + 4)
    element_size = torch.empty((), dtype=resolve_dtype(dtype)).element_size()
    return vectors * arch.head_dim * element_size


def num_blocks_for_budget(
    arch: ModelArchConfig, block_size: int, dtype: torch.dtype | str, budget_bytes: int
) -> int:
    """How many KV blocks fit in ``budget_bytes``; ``ConfigError`` if not even one does."""
    block_bytes = kv_block_bytes(arch, block_size, dtype)
    num_blocks = budget_bytes // block_bytes
    if num_blocks < 1:
        raise ConfigError(
            f"kv_cache_bytes = {budget_bytes}: less than one KV block "
            f"({block_bytes} bytes for block_size = {block_size})"
        )
    return num_blocks


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids, positions, logits_indices) -> logits: the model, or its compiled form."""


class ModelRunner:
    """Runs a model over a paged KV cache: ``execute(plan)`` -> logits of the sampling rows."""

    def __init__(
        self,
        model: nn.Module,
        arch: ModelArchConfig,
        num_blocks: int,
        block_size: int,
        kv_cache_dtype: str = "auto",
    ) -> None:
        """``kv_cache_dtype``: ``auto`` (the model's dtype) or ``int8`` (with scales)."""
        weight = next(model.parameters())
        self.model = model
        self.forward: Forward = model
        self.decode_kernel: DecodeKernel | None = None
        self.arch = arch
        self.device = weight.device
        self.dtype = weight.dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.kv_cache = allocate_kv_cache(
            arch.num_layers,
            num_blocks,
            block_size,
            arch.num_kv_heads,
            arch.head_dim,
            torch.int8 if kv_cache_dtype == "int8" else self.dtype,
            self.device,
        )
        self.kv_scales = allocate_kv_scales(self.kv_cache) if kv_cache_dtype == "int8" else None
        # Decodes read their KV from dense rows instead of gathering blocks every layer and
        # step; the rows may take as much memory again as the paged cache, never more.
        # An int8 cache gathers instead: its rows would be widened to the model's dtype.
        self.decode_cache = None
        if self.kv_scales is None:
            self.decode_cache = DecodeCache(self.kv_cache, max_bytes=self.kv_cache_bytes)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        dtype: torch.dtype | str | None,
        device: torch.device | str,
        block_size: int,
        kv_cache_bytes: int,
        quantization: str = "none",
        kv_cache_dtype: str = "auto",
    ) -> ModelRunner:
        """Load a Hugging Face checkpoint and size the KV cache to ``kv_cache_bytes``.

        ``quantization``: ``int8`` or ``w8a8`` quantizes the weights on load (``llm/quant``);
        ``kv_cache_dtype = "int8"`` stores K/V in int8 with a scale per token and head.
        """
        model, arch = load_checkpoint(path, dtype, device, quantization)
        dtype = "int8" if kv_cache_dtype == "int8" else next(model.parameters()).dtype
        num_blocks = num_blocks_for_budget(arch, block_size, dtype, kv_cache_bytes)
        return cls(model, arch, num_blocks, block_size, kv_cache_dtype)

    def pack_weights(self) -> int:
        """Pack the model's fp32/bf16 linear layers for oneDNN (CPU only; ``llm/packed.py``);
        returns how many were packed (0 where packing does not apply)."""
        dtype = next(self.model.parameters()).dtype
        if not packing_available(self.device, dtype):
            return 0
        packed = pack_linears(self.model)
        logger.info("%d linear layers packed for oneDNN", packed)
        return packed

    def compile(self) -> None:
        """Run the model through ``torch.compile`` (TorchInductor) from the next step on.

        Weights are frozen into the compiled code, which lets Inductor prepack them and fuse
        the element-wise work between GEMMs; attention stays one opaque op
        (``attention.attend``). The token axes are unbacked symbols, so one graph serves
        every step from a 1-token decode to a full prefill. The first step compiles (tens of
        seconds on a small CPU); ``LLMEngine.warm_up`` does that before serving.

        On CPU, decodes that read dense rows attend through the native kernel of
        ``llm/kernels.py`` as well, built here (or loaded from its cache).
        """
        from torch._inductor import config as inductor_config

        compiled = torch.compile(self.model, dynamic=True)

        def forward(
            input_ids: torch.Tensor, positions: torch.Tensor, logits_indices: torch.Tensor
        ) -> torch.Tensor:
            for tensor in (input_ids, positions, logits_indices):
                # Without this a 1-token step (or a step that samples 0 or 1 rows) would
                # specialize and compile a graph of its own.
                torch._dynamo.decorators.mark_unbacked(tensor, 0)
            # Freezing is read when a graph compiles, inside this call. Passed as
            # torch.compile(options=...) it did not take (steps measured as without it);
            # patched here, it stays off for anything else compiled in this process.
            with inductor_config.patch(freezing=True):
                logits: torch.Tensor = compiled(input_ids, positions, logits_indices)
            return logits

        self.forward = forward
        if self.decode_cache is not None and kernel_applies(
            self.device, self.dtype, self.arch.head_dim
        ):
            self.decode_kernel = decode_attention_kernel()
        logger.info("model forward compiled with TorchInductor on first step")

    @property
    def kv_cache_bytes(self) -> int:
        scales = 0 if self.kv_scales is None else self.kv_scales.numel() * 4
        return self.kv_cache.numel() * self.kv_cache.element_size() + scales

    def execute(self, output: SchedulerOutput) -> RunnerStep:
        """Compute the step ``output`` plans: write its KV, return its sampling rows' logits."""
        chunks = output.scheduled
        request_ids = tuple(chunk.request_id for chunk in chunks if chunk.samples)
        if not chunks:
            return RunnerStep(torch.empty(0, self.arch.vocab_size), request_ids)
        input_ids = self._long_tensor([t for chunk in chunks for t in chunk.token_ids])
        positions = self._long_tensor([p for chunk in chunks for p in chunk.positions])
        with torch.inference_mode():
            batch = build_attention_batch(
                chunks,
                self.kv_cache,
                decode_cache=self.decode_cache,
                kv_scales=self.kv_scales,
                decode_kernel=self.decode_kernel,
            )
            with step_context(batch):
                logits = self.forward(input_ids, positions, batch.logits_indices)
        return RunnerStep(logits, request_ids)

    def _long_tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)
