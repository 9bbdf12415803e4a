"""Linear layers packed for oneDNN: the same results as ``F.linear``, in the engine too."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")  # save_tiny_checkpoint writes with it

from tiny_configs import save_tiny_checkpoint, tiny_engine  # noqa: E402
from torch import nn  # noqa: E402

from inferd.backends.torch_packing import PackedLinear, packing_available  # noqa: E402
from inferd.llm.packed import pack_linears  # noqa: E402
from inferd.llm.quant.layers import Int8Linear  # noqa: E402
from inferd.llm.sampling import SamplingParams  # noqa: E402

pytestmark = pytest.mark.skipif(
    not packing_available("cpu", torch.float32), reason="this torch build has no oneDNN"
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rows", [1, 7, 32, 65])
def test_packed_linear_computes_what_f_linear_does(dtype: torch.dtype, rows: int) -> None:
    if not packing_available("cpu", dtype):
        pytest.skip(f"no oneDNN {dtype} on this CPU")
    torch.manual_seed(rows)
    linear = nn.Linear(96, 40).to(dtype)
    packed = PackedLinear.from_linear(linear)
    x = torch.randn(rows, 96, dtype=dtype)
    with torch.inference_mode():
        expected, got = linear(x), packed(x)
        batched = packed(x.reshape(1, rows, 96))
    assert got.dtype == dtype and got.shape == (rows, 40)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), expected.float(), rtol=tolerance, atol=tolerance)
    assert torch.equal(batched.reshape(rows, 40), got)


class _Tied(nn.Module):
    embedding_name = "embed"

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 16, bias=False))
        self.lm_head: nn.Module | None = None


def test_pack_linears_replaces_every_linear_and_packs_a_tied_head() -> None:
    model = _Tied()
    with torch.inference_mode():
        x = torch.randn(5, 16)
        expected = model.body(x) @ model.embed.weight.T
        assert pack_linears(model) == 3
        got = model.lm_head(model.body(x))  # type: ignore[misc]
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, PackedLinear)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"], ids=["llama", "gpt2-tied-head"])
def test_the_engine_packs_by_default_and_decodes_the_same_tokens(
    tmp_path: Path, architecture: str
) -> None:
    save_tiny_checkpoint(tmp_path, architecture)
    packed, plain = tiny_engine(tmp_path), tiny_engine(tmp_path, pack_weights=False)
    layers = list(packed.runner.model.modules())
    assert any(isinstance(m, PackedLinear) for m in layers)
    assert not any(isinstance(m, nn.Linear) for m in layers)
    assert isinstance(packed.runner.model.lm_head, PackedLinear)
    assert any(isinstance(m, nn.Linear) for m in plain.runner.model.modules())
    prompts = [[5, 9, 17, 33, 2, 8], [40, 41, 42], list(range(3, 30))]
    greedy = SamplingParams(max_tokens=12, ignore_eos=True, temperature=0.0)
    assert packed.generate(prompts, greedy) == plain.generate(prompts, greedy)


def test_int8_weights_are_not_packed(tmp_path: Path) -> None:
    save_tiny_checkpoint(tmp_path)
    engine = tiny_engine(tmp_path, quantization="int8")
    modules = list(engine.runner.model.modules())
    assert any(isinstance(m, Int8Linear) for m in modules)
    assert not any(isinstance(m, PackedLinear) for m in modules)


def test_pack_weights_is_read_from_the_llm_table(tmp_path: Path) -> None:
    from inferd.config import model_config_from_dict
    from inferd.errors import ConfigError

    read = model_config_from_dict(
        {"backend": "llm", "llm": {"pack_weights": False}}, tmp_path, "m", "model.toml"
    )
    assert read["llm"].pack_weights is False
    default = model_config_from_dict({"backend": "llm"}, tmp_path, "m", "model.toml")
    assert default["llm"].pack_weights is True
    with pytest.raises(ConfigError, match="pack_weights"):
        model_config_from_dict(
            {"backend": "llm", "llm": {"pack_weights": "no"}}, tmp_path, "m", "model.toml"
        )
