"""Int8 weights for the LLM's linear layers: per-output-channel scales, four kernels.

``quantize_model`` swaps every ``nn.Linear`` of a loaded model, the LM head and the token
embedding included (a tied head shares the embedding's int8 matrix), for ``Int8Linear``:
int8 weights with one fp32 scale per output channel (symmetric, ``scale = max|w| / 127``).
Which kernel multiplies depends on the rows of the step (measured by
``benchmarks/llm_quant.py`` on the CPU; see docs/quantization-llm.md):

- few rows (decode steps of small batches): torch's CPU ``_weight_int8pack_mm``, bf16
  activations times the int8 weights as stored, so a step reads a quarter of fp32's weight
  bytes; ``int8`` uses it up to ``PACKED_KERNEL_MAX_ROWS`` rows, ``w8a8`` below
  ``W8A8_MIN_ROWS``;
- up to ``DECODE_MAX_ROWS`` rows (batched decode) through a layer of at most
  ``DEQUANTIZED_MAX_WEIGHTS`` weights, ``int8``: the weights dequantized to fp32 for MKL's
  fp32 GEMM (fp32 activations). So small a product is mostly fixed costs, and a bf16 GEMM
  (oneDNN) costs more to call, and two more conversions to feed, than its multiply saves;
- more rows, ``int8`` (weight-only): the weights are widened to bf16 for one bf16 GEMM;
- more rows, ``w8a8``: each activation row is quantized to int8 with its own scale and
  multiplied in int8 with exact int32 accumulation (``torch._int_mm``), about 3x faster than
  fp32 from 8 rows up; a row's result never depends on the other rows of its batch.
"""

from __future__ import annotations

import functools
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from inferd.errors import ConfigError

QUANTIZATIONS: Final = ("none", "int8", "w8a8")
"""What ``EngineConfig.quantization`` accepts: int8 weights (``int8``: bf16 or fp32
activations; ``w8a8``: int8 activations too in steps of ``W8A8_MIN_ROWS`` rows or more)."""
COMPUTE_DTYPE: Final = torch.bfloat16
PACKED_KERNEL_MAX_ROWS: Final = 8
"""Most rows the packed int8 kernel takes: its cost grows with rows much faster than a GEMM's."""
DECODE_MAX_ROWS: Final = 32
"""Most rows ``matmul_dequantized`` takes: above, the bf16 GEMM's faster multiply pays."""
DEQUANTIZED_MAX_WEIGHTS: Final = 1 << 17
"""Largest layer, in weights (256 x 512), that decode steps multiply in fp32 rather than bf16."""
W8A8_MIN_ROWS: Final = 4
"""Fewest rows ``w8a8`` quantizes activations for: below, the packed kernel is as fast."""
_PACKED_CAPABILITIES: Final = ("AVX2", "AVX512")
_PACKED_K_MULTIPLE: Final = 16  # the kernel reads K in 16-wide vectors: other K crash it
_PACKED_ALIGNMENT: Final = 64  # weights 8 bytes off a 16-byte boundary crash it too
_TINY: Final = torch.finfo(torch.float32).tiny


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] -> (int8 [out, in], fp32 scale [out]), symmetric per output row."""
    rows = weight.float()
    scale = (rows.abs().amax(dim=1) / 127).clamp(min=_TINY)
    quantized = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scale


def dequantize_per_channel(quantized: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The fp32 weight an (int8, scale) pair stands for."""
    return quantized.float() * scale[:, None]


class Int8Linear(nn.Module):
    """``y = x @ (weight * scale)^T + bias`` with int8 ``weight`` kept int8 in memory.

    ``dynamic_activations``: steps of ``W8A8_MIN_ROWS`` rows or more quantize each row of
    ``x`` to int8 with its own scale and multiply in int8 with int32 accumulation (w8a8);
    per-row scales keep a sequence's result independent of the others in its batch.
    """

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self.dynamic_activations = False
        self._compute_scale: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight, scale = quantize_per_channel(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(weight, scale.to(linear.weight.dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean on purpose: in a decode step, where attention evicts the caches between two
        # layers, each torch call around a small GEMM costs 10-30 µs; the calls skipped here
        # and the fp32 kernel for small layers made the demo LLM's batch-32 step 5% faster.
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        out = self.matmul(rows)
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if self.bias is not None:
            out += self.bias
        return out if x.dim() == 2 else out.view(*x.shape[:-1], self.out_features)

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows @ (weight * scale)^T`` by the kernel for this many rows (module docstring)."""
        num_rows = rows.shape[0]
        if self.dynamic_activations and rows.device.type == "cpu":
            if num_rows >= W8A8_MIN_ROWS or not self.packed_kernel_fits(rows):
                return self.matmul_w8a8(rows)
            return self.matmul_packed(rows)
        if num_rows <= PACKED_KERNEL_MAX_ROWS and self.packed_kernel_fits(rows):
            return self.matmul_packed(rows)
        small = self.in_features * self.out_features <= DEQUANTIZED_MAX_WEIGHTS
        if small and num_rows <= DECODE_MAX_ROWS and rows.dtype == torch.float32:
            return self.matmul_dequantized(rows)
        return self.matmul_widened(rows)

    def matmul_packed(self, rows: torch.Tensor) -> torch.Tensor:
        """bf16 rows times the int8 weight as stored: reads a quarter of fp32's bytes."""
        compute_rows = rows.to(COMPUTE_DTYPE).contiguous()
        out: torch.Tensor = torch.ops.aten._weight_int8pack_mm(
            compute_rows, self.weight, self._scale()
        )
        return out

    def matmul_dequantized(self, rows: torch.Tensor) -> torch.Tensor:
        """The weight dequantized to the rows' dtype for one GEMM; the scale applies to the output.

        Exact up to the GEMM's rounding: int8 values are exact in fp32 and bf16.
        """
        return F.linear(rows, self.weight.to(rows.dtype)).mul_(self.scale)

    def matmul_widened(self, rows: torch.Tensor) -> torch.Tensor:
        """The weight widened to bf16 for one GEMM; the scale applies to the output."""
        out = F.linear(rows.to(COMPUTE_DTYPE), self.weight.to(COMPUTE_DTYPE))
        return out.float().mul_(self.scale)

    def matmul_w8a8(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows quantized to int8 per row, int8 x int8 -> int32 (exact), both scales applied."""
        values = rows.float()
        row_scale = values.abs().amax(dim=1, keepdim=True).div_(127).clamp_(min=_TINY)
        quantized = (values / row_scale).round_().to(torch.int8)
        out = torch._int_mm(quantized, self.weight.t())
        return out.float().mul_(row_scale).mul_(self.scale)

    def packed_kernel_fits(self, rows: torch.Tensor) -> bool:
        """Whether ``matmul_packed`` can take these rows: AVX2/AVX512, K % 16 == 0, aligned."""
        return (
            rows.device.type == "cpu"
            and self.in_features % _PACKED_K_MULTIPLE == 0
            and self.weight.data_ptr() % _PACKED_ALIGNMENT == 0
            and _cpu_has_packed_kernel()
        )

    def _scale(self) -> torch.Tensor:
        """The scale in the kernel's dtype, converted once per scale tensor."""
        scale = self.scale
        if self._compute_scale is None or self._compute_scale[0] is not scale:
            self._compute_scale = (scale, scale.to(COMPUTE_DTYPE))
        return self._compute_scale[1]

    def extra_repr(self) -> str:
        mode = "w8a8" if self.dynamic_activations else "int8"
        return f"in_features={self.in_features}, out_features={self.out_features}, {mode}"


class Int8Embedding(nn.Module):
    """A token embedding stored as int8 rows with one scale per row (shared with a tied head)."""

    weight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids, self.weight).to(self.scale.dtype)
        # the scales looked up as rows too: cheaper than advanced indexing (a prefill's 1,024
        # tokens: 150 µs instead of 210)
        return rows.mul_(F.embedding(input_ids, self.scale.unsqueeze(-1)))


def quantize_model(model: nn.Module, quantization: str = "int8", lm_head: bool = True) -> None:
    """Replace ``model``'s linear layers with ``Int8Linear`` in place (``int8`` or ``w8a8``).

    With ``lm_head``, the LM head and the token embedding too; a head tied to the embedding
    shares one int8 matrix with it (its per-row scales serve both the lookup and the logits).
    """
    head = getattr(model, "lm_head", None)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head:
                setattr(parent, name, Int8Linear.from_linear(child))
    if lm_head:
        name = embedding_name(model)
        table = getattr(model, name).weight.detach()
        weight, scale = quantize_per_channel(table)
        scale = scale.to(table.dtype)  # the lookup's output dtype: the model's
        setattr(model, name, Int8Embedding(weight, scale))
        if isinstance(head, nn.Linear):
            model.lm_head = Int8Linear.from_linear(head)
        else:  # tied: the head multiplies by the embedding's very matrix
            model.lm_head = Int8Linear(weight, scale)
    set_activations(model, quantization)


def set_activations(model: nn.Module, quantization: str) -> None:
    """``w8a8``: int8 activations in steps of ``W8A8_MIN_ROWS`` rows or more; ``int8``: bf16."""
    if quantization not in QUANTIZATIONS[1:]:
        raise ConfigError(f"quantization = {quantization!r}: expected int8 or w8a8")
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.dynamic_activations = quantization == "w8a8"


def weight_bytes(model: nn.Module, linear_only: bool = False) -> int:
    """Bytes of the weights (parameters and buffers), shared tensors counted once.

    ``linear_only``: just the decoder layers' projections (with their scales and biases), not
    the embedding, LM head or norms.
    """
    head = getattr(model, "lm_head", None)
    modules = [
        module
        for module in model.modules()
        if not linear_only or (isinstance(module, nn.Linear | Int8Linear) and module is not head)
    ]
    tensors = {
        tensor.data_ptr(): tensor.numel() * tensor.element_size()
        for module in modules
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    }
    return sum(tensors.values())


def embedding_name(model: nn.Module) -> str:
    """The attribute holding the model's token embedding (``embedding_name`` of its class)."""
    name = getattr(type(model), "embedding_name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{type(model).__name__} does not name its token embedding")
    return name


@functools.cache
def _cpu_has_packed_kernel() -> bool:
    return torch.backends.cpu.get_cpu_capability() in _PACKED_CAPABILITIES


def format_bytes(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"
