"""The native decode attention (``llm/kernels.py``) against SDPA over the same dense rows."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from inferd.llm.kernels import decode_attention_kernel, kernel_applies  # noqa: E402


def _sdpa(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lens: torch.Tensor, scale: float
) -> torch.Tensor:
    """Row r's query attends the first lens[r] columns of row r."""
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
def test_the_kernel_appends_and_attends_as_sdpa_does(
    dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int
) -> None:
    torch.manual_seed(0)
    num_seqs, rows, capacity = 5, 7, 40  # more rows than sequences, as the cache keeps
    q = torch.randn(num_seqs, num_heads, head_dim).to(dtype)
    k_new = torch.randn(num_seqs, num_kv_heads, head_dim).to(dtype)
    # V as the models hand it over: a view into a fused projection, sequences strided.
    fused = torch.randn(num_seqs, 3 * num_kv_heads * head_dim).to(dtype)
    v_new = fused[:, num_kv_heads * head_dim : 2 * num_kv_heads * head_dim].view(
        num_seqs, num_kv_heads, head_dim
    )
    keys = torch.randn(rows, num_kv_heads, capacity, head_dim).to(dtype)
    values = torch.randn(rows, num_kv_heads, capacity, head_dim).to(dtype)
    lens = torch.tensor([1, 40, 17, 2, 33])  # rows' order
    order = torch.tensor([3, 0, 4, 1, 2])  # row r holds sequence order[r]
    expected_keys, expected_values = keys.clone(), values.clone()
    for row, seq in enumerate(order.tolist()):
        expected_keys[row, :, lens[row] - 1] = k_new[seq]
        expected_values[row, :, lens[row] - 1] = v_new[seq]
    by_row = _sdpa(q[order], expected_keys, expected_values, lens, head_dim**-0.5)
    expected = torch.empty_like(by_row)
    expected[order] = by_row
    assert kernel_applies(q.device, dtype, head_dim)

    got = decode_attention_kernel()(q, k_new, v_new, keys, values, lens, order, head_dim**-0.5)

    assert got.dtype == dtype and got.shape == q.shape
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)
    # Columns past a row's length are never read: garbage there changes nothing.
    keys[0, :, 1:] = float("nan")
    values[3, :, 2:] = float("inf")
    again = decode_attention_kernel()(q, k_new, v_new, keys, values, lens, order, head_dim**-0.5)
    torch.testing.assert_close(again, got)


def test_shapes_and_dtypes_the_kernel_does_not_cover_fall_back_or_fail_clearly() -> None:
    cpu = torch.device("cpu")
    assert not kernel_applies(cpu, torch.float16, 64)
    assert not kernel_applies(cpu, torch.float32, 48)  # head_dim 48 is not compiled in
    assert not kernel_applies(torch.device("meta"), torch.float32, 64)
    kernel = decode_attention_kernel()

    def call(
        head_dim: int = 64,
        cache_dtype: torch.dtype = torch.float32,
        lens: tuple[int, int] = (1, 1),
        order: tuple[int, int] = (0, 1),
    ) -> torch.Tensor:
        new = torch.zeros(2, 4, head_dim)
        cache = torch.zeros(2, 4, 8, head_dim, dtype=cache_dtype)
        return kernel(
            torch.zeros(2, 4, head_dim),
            new,
            new,
            cache,
            cache.clone(),
            torch.tensor(lens),
            torch.tensor(order),
            1.0,
        )

    assert call().shape == (2, 4, 64)
    with pytest.raises(RuntimeError, match="head_dim 48 is not compiled in"):
        call(head_dim=48)
    with pytest.raises(RuntimeError, match="must share a dtype"):
        call(cache_dtype=torch.bfloat16)
    # What would write outside the cache is refused before anything is written.
    with pytest.raises(RuntimeError, match=r"lens\[1\] = 9 is outside \[1, 8\]"):
        call(lens=(1, 9))
    with pytest.raises(RuntimeError, match=r"lens\[0\] = 0 is outside"):
        call(lens=(0, 1))
    with pytest.raises(RuntimeError, match=r"order\[0\] = 2 is outside \[0, 2\)"):
        call(order=(2, 0))
