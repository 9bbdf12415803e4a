"""The native decode attention (``llm/kernels.py``) against SDPA over the same dense rows."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from inferd.llm.kernels import decode_attention_kernel, kernel_applies  # noqa: E402


def _sdpa(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lens: torch.Tensor, scale: float
) -> torch.Tensor:
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads, width = keys.shape[1], int(lens.max())
    mask = (torch.arange(width)[None, :] < lens[:, None]).view(num_seqs, 1, 1, width)
    queries = q.float().view(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
    out = F.scaled_dot_product_attention(
        queries,
        keys[:num_seqs, :, :width].float(),
        values[:num_seqs, :, :width].float(),
        attn_mask=mask,
        scale=scale,
    )
    return out.reshape(num_seqs, num_heads, head_dim)


# The first call builds the kernel: about a minute on a fresh 2-core machine.
@pytest.mark.timeout(400)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    ("num_heads", "num_kv_heads", "head_dim"), [(8, 8, 64), (4, 2, 16), (12, 3, 128)]
)
def test_the_kernel_attends_as_sdpa_does(
    dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int
) -> None:
    torch.manual_seed(0)
    num_seqs, rows, capacity = 5, 7, 40  # more rows than sequences, as the cache keeps
    q = torch.randn(num_seqs, num_heads, head_dim).to(dtype)
    keys = torch.randn(rows, num_kv_heads, capacity, head_dim).to(dtype)
    values = torch.randn(rows, num_kv_heads, capacity, head_dim).to(dtype)
    lens = torch.tensor([1, 40, 17, 2, 33])
    assert kernel_applies(q.device, dtype, head_dim)
    got = decode_attention_kernel()(q, keys, values, lens, head_dim**-0.5)
    assert got.dtype == dtype and got.shape == q.shape
    expected = _sdpa(q, keys, values, lens, head_dim**-0.5)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)
    # Columns past a row's length are never read: garbage there changes nothing.
    keys[0, :, 1:] = float("nan")
    values[3, :, 2:] = float("inf")
    again = decode_attention_kernel()(q, keys, values, lens, head_dim**-0.5)
    torch.testing.assert_close(again, got)


def test_shapes_and_dtypes_the_kernel_does_not_cover_fall_back_or_fail_clearly() -> None:
    cpu = torch.device("cpu")
    assert not kernel_applies(cpu, torch.float16, 64)
    assert not kernel_applies(cpu, torch.float32, 48)  # head_dim 48 is not compiled in
    assert not kernel_applies(torch.device("meta"), torch.float32, 64)
    q = torch.zeros(2, 4, 48)
    with pytest.raises(RuntimeError, match="head_dim 48 is not compiled in"):
        decode_attention_kernel()(
            q, torch.zeros(2, 4, 8, 48), torch.zeros(2, 4, 8, 48), torch.tensor([1, 1]), 1.0
        )
    with pytest.raises(RuntimeError, match="must share a dtype"):
        decode_attention_kernel()(
            torch.zeros(2, 4, 64),
            torch.zeros(2, 4, 8, 64, dtype=torch.bfloat16),
            torch.zeros(2, 4, 8, 64, dtype=torch.bfloat16),
            torch.tensor([1, 1]),
            1.0,
        )
