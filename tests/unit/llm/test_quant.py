"""Weight-only int8 (and w8a8) for the LLM engine: the math, the engine, the checkpoint folder.

Tiny random Llama and GPT-2 checkpoints (``tiny_configs``) are written with ``save_pretrained``
and loaded by the real engine; accuracy bounds are asserted against the fp32 model on the same
contexts (teacher forcing), which random weights still make meaningful at this size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from tiny_configs import GPT2_SHAPE, LLAMA_SHAPE  # noqa: E402

from inferd.errors import ConfigError  # noqa: E402
from inferd.llm import quant  # noqa: E402
from inferd.llm.attention import dequantize_kv, quantize_kv  # noqa: E402
from inferd.llm.engine import EngineConfig, LLMEngine  # noqa: E402
from inferd.llm.models import load_model  # noqa: E402
from inferd.llm.quant.layers import embedding_name  # noqa: E402
from inferd.llm.sampling import SamplingParams  # noqa: E402

CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**LLAMA_SHAPE),
    "gpt2": lambda: transformers.GPT2Config(**GPT2_SHAPE),
}
NUM_TOKENS = 16


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder: Path = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[request.param]())
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def prompts(num: int = 6) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 256, (4 + 5 * i,), generator=generator).tolist() for i in range(num)]


def engine(path: Path, quantization: str = "none") -> LLMEngine:
    config = EngineConfig(
        model_path=str(path),
        dtype="float32",
        block_size=4,
        kv_cache_bytes=8 << 20,
        max_num_seqs=8,
        quantization=quantization,
    )
    return LLMEngine.from_config(config)


def greedy(max_tokens: int = NUM_TOKENS) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)


# --- the math ---------------------------------------------------------------------------------


def test_round_trip_error_is_at_most_half_a_step_per_row() -> None:
    weight = torch.randn(48, 96) * torch.logspace(-3, 1, 48)[:, None]  # rows of every scale
    quantized, scale = quant.quantize_per_channel(weight)
    assert quantized.dtype == torch.int8 and scale.shape == (48,)
    assert int(quantized.abs().amax(dim=1).min()) == 127  # each row uses the full range
    error = (quant.dequantize_per_channel(quantized, scale) - weight).abs().amax(dim=1)
    assert torch.all(error <= scale / 2 * (1 + 1e-5))


def test_a_zero_row_quantizes_to_zeros_without_nan() -> None:
    weight = torch.randn(4, 32)
    weight[2] = 0
    quantized, scale = quant.quantize_per_channel(weight)
    assert torch.all(quantized[2] == 0) and torch.isfinite(scale).all() and scale[2] > 0


@pytest.mark.parametrize("in_features", [64, 40])  # 40: the packed kernel cannot take it
@pytest.mark.parametrize("num_rows", [1, 4, 9, 33])  # each kernel's side of the thresholds
@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_int8_linear_is_close_to_fp32(in_features: int, num_rows: int, mode: str) -> None:
    torch.manual_seed(num_rows)
    linear = torch.nn.Linear(in_features, 48)
    layer = quant.Int8Linear.from_linear(linear)
    layer.dynamic_activations = mode == "w8a8"
    x = torch.randn(num_rows, 3, in_features)[:, 1]  # a strided view, as a model may pass
    with torch.inference_mode():
        expected, out = F.linear(x, linear.weight, linear.bias), layer(x)
    assert out.shape == expected.shape and out.dtype == torch.float32
    relative = (out - expected).norm() / expected.norm()
    assert relative < 0.02, relative  # int8 weights (and bf16 or int8 activations)


def test_the_kernels_compute_the_same_product() -> None:
    torch.manual_seed(0)
    layer = quant.Int8Linear.from_linear(torch.nn.Linear(64, 32, bias=False))
    x = torch.randn(16, 64)
    with torch.inference_mode():
        exact = x @ quant.dequantize_per_channel(layer.weight, layer.scale).t()
        kernels = [layer.matmul_packed, layer.matmul_dequantized, layer.matmul_widened]
        for kernel in [*kernels, layer.matmul_w8a8]:
            out = kernel(x).float()
            assert (out - exact).norm() / exact.norm() < 0.01, kernel
        # fp32 rows times the int8 weight dequantized to fp32: exact but for fp32 rounding
        assert torch.allclose(layer.matmul_dequantized(x), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "num_rows", "dtype", "kernel"),
    [
        ((64, 32), 9, torch.float32, "matmul_dequantized"),
        ((64, 32), quant.DECODE_MAX_ROWS, torch.float32, "matmul_dequantized"),
        ((64, 32), quant.DECODE_MAX_ROWS + 1, torch.float32, "matmul_widened"),
        ((64, 32), 9, torch.bfloat16, "matmul_widened"),  # fp32 only for fp32 activations
        ((512, 512), 9, torch.float32, "matmul_widened"),  # above DEQUANTIZED_MAX_WEIGHTS
    ],
)
def test_batched_decode_steps_of_small_layers_multiply_in_fp32(
    shape: tuple[int, int], num_rows: int, dtype: torch.dtype, kernel: str
) -> None:
    layer = quant.Int8Linear.from_linear(torch.nn.Linear(*shape))
    calls = []
    for name in ("matmul_packed", "matmul_dequantized", "matmul_widened", "matmul_w8a8"):
        method = getattr(layer, name)
        setattr(layer, name, lambda rows, m=method, n=name: calls.append(n) or m(rows))
    with torch.inference_mode():
        out = layer(torch.randn(num_rows, shape[0], dtype=dtype))
    assert calls == [kernel] and out.dtype == dtype


def test_a_misaligned_weight_takes_a_safe_kernel() -> None:
    """The packed kernel crashes on weights 8 bytes off a 16-byte boundary (safetensors views)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    weight, scale = quant.quantize_per_channel(linear.weight.detach())
    storage = torch.empty(weight.numel() + 8, dtype=torch.int8)
    misaligned = storage[8:].view_as(weight).copy_(weight)
    layer = quant.Int8Linear(misaligned, scale)
    x = torch.randn(1, 64)
    assert not layer.packed_kernel_fits(x)
    with torch.inference_mode():
        assert torch.allclose(layer(x), F.linear(x, linear.weight), rtol=0.05, atol=0.05)


def test_quantize_model_shares_the_tied_embedding_with_the_head(checkpoint: Path) -> None:
    model, arch = load_model(checkpoint, "float32")
    quant.quantize_model(model)
    embedding = getattr(model, embedding_name(model))
    assert isinstance(embedding, quant.Int8Embedding)
    assert isinstance(model.lm_head, quant.Int8Linear)
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())
    if arch.tie_word_embeddings:
        assert model.lm_head.weight is embedding.weight  # one int8 matrix, not two


# --- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp32(checkpoint: Path) -> tuple[LLMEngine, list[list[int]]]:
    """The fp32 engine and its greedy tokens for ``prompts()``."""
    reference = engine(checkpoint)
    return reference, reference.generate(prompts(), greedy())


def test_engine_rejects_an_unknown_quantization(checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"quantization = 'int4'.*none, int8, w8a8"):
        engine(checkpoint, "int4")


@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_engine_serves_int8_weights_that_agree_with_fp32(
    checkpoint: Path, fp32: tuple[LLMEngine, list[list[int]]], mode: str
) -> None:
    (reference, expected), quantized = fp32, engine(checkpoint, mode)
    model, fp32_model = quantized.runner.model, reference.runner.model
    linears = [m for m in model.modules() if isinstance(m, quant.Int8Linear)]
    assert linears and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(m.weight.dtype == torch.int8 for m in linears)
    loaded, _ = load_model(checkpoint, "float32")  # as loaded: the engine may repack its own
    assert quant.weight_bytes(model, linear_only=True) <= 0.3 * quant.weight_bytes(
        loaded, linear_only=True
    )
    # GPT-2's position embedding and biases stay fp32: 36% of this tiny model, 25% of Llama.
    assert quant.weight_bytes(model) <= 0.4 * quant.weight_bytes(loaded)
    outputs = quantized.generate(prompts(), greedy())
    flat = [
        (a, b)
        for out, ref in zip(outputs, expected, strict=True)
        for a, b in zip(out, ref, strict=True)
    ]
    matching = sum(a == b for a, b in flat)
    assert matching >= 0.5 * len(prompts()) * NUM_TOKENS  # free running: one flip diverges
    arch = reference.arch
    for batch in ([prompts()[0]], prompts(9)):  # one sequence: the packed kernel; 9: the other
        accuracy = quant.compare_greedy(fp32_model, model, arch, batch, NUM_TOKENS)
        assert accuracy.mean_kl < 0.01, accuracy
        assert accuracy.greedy_agreement >= 0.9, accuracy


def test_a_bf16_model_stays_bf16_when_quantized(checkpoint: Path, tmp_path: Path) -> None:
    reference, arch = load_model(checkpoint, "bfloat16")
    candidate, _ = load_model(checkpoint, "bfloat16")
    quant.quantize_model(candidate)
    embedding = getattr(candidate, embedding_name(candidate))
    assert embedding(torch.tensor([3, 4])).dtype == torch.bfloat16
    accuracy = quant.compare_greedy(reference, candidate, arch, prompts(), NUM_TOKENS)
    assert accuracy.mean_kl < 0.01 and accuracy.greedy_agreement >= 0.9, accuracy
    quant.save_quantized(candidate, arch, checkpoint, tmp_path / "int8")
    loaded, _ = quant.load_checkpoint(tmp_path / "int8", "bfloat16", "cpu")
    loaded_embedding, head = getattr(loaded, embedding_name(loaded)), loaded.lm_head
    assert isinstance(head, quant.Int8Linear)
    assert loaded_embedding(torch.tensor([3])).dtype == torch.bfloat16
    if arch.tie_word_embeddings:  # placed before loading, the head still shares the table
        assert head.weight is loaded_embedding.weight


def test_the_harness_decodes_as_the_engine_does(
    checkpoint: Path, fp32: tuple[LLMEngine, list[list[int]]]
) -> None:
    reference, expected = fp32
    model, arch = reference.runner.model, reference.arch
    assert quant.greedy_generate(model, arch, prompts(), NUM_TOKENS) == expected
    same = quant.compare_greedy(model, model, arch, prompts(), 8)
    assert same.mean_kl < 1e-9 and same.greedy_agreement == 1.0
    assert same.identical_sequences == same.num_prompts


# --- the int8 KV cache ------------------------------------------------------------------------


def test_kv_vectors_round_trip_within_half_a_step() -> None:
    x = torch.randn(5, 3, 16) * torch.logspace(-2, 2, 5)[:, None, None]
    quantized, scale = quantize_kv(x)
    assert quantized.dtype == torch.int8 and scale.shape == (5, 3)
    error = (dequantize_kv(quantized, scale, torch.float32) - x).abs().amax(dim=-1)
    assert torch.all(error <= scale / 2 * (1 + 1e-5))


def test_engine_with_an_int8_kv_cache(
    checkpoint: Path, fp32: tuple[LLMEngine, list[list[int]]]
) -> None:
    reference, expected = fp32
    config = EngineConfig(
        model_path=str(checkpoint), dtype="float32", block_size=4, kv_cache_bytes=8 << 20,
        max_num_seqs=8, max_num_batched_tokens=16, kv_cache_dtype="int8",
    )  # fmt: skip
    quantized = LLMEngine.from_config(config)  # 16-token steps: prefills read int8 context
    runner, arch = quantized.runner, quantized.arch
    assert runner.kv_cache.dtype == torch.int8 and runner.kv_scales is not None
    head_dim = arch.head_dim
    assert runner.num_blocks == reference.runner.num_blocks * 4 * head_dim // (head_dim + 4)
    assert runner.kv_cache_bytes <= 8 << 20
    outputs = quantized.generate(prompts(), greedy())
    flat = [
        (a, b) for o, r in zip(outputs, expected, strict=True) for a, b in zip(o, r, strict=True)
    ]
    assert sum(a == b for a, b in flat) >= 0.5 * len(flat)
    model = reference.runner.model
    accuracy = quant.compare_greedy(model, model, arch, prompts(10), NUM_TOKENS, "int8")
    assert accuracy.mean_kl < 0.01 and accuracy.greedy_agreement >= 0.9, accuracy
    with pytest.raises(ConfigError, match="kv_cache_dtype = 'fp8'"):
        engine_config = EngineConfig(model_path=str(checkpoint), kv_cache_dtype="fp8")
        LLMEngine.from_config(engine_config)


# --- checkpoint folders -----------------------------------------------------------------------


def test_optimize_checkpoint_writes_a_folder_the_engine_serves(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    report = quant.optimize_checkpoint(
        checkpoint, "int8", out, num_tokens=8, batch_sizes=(2,), rounds=1
    )
    assert report.model_bytes[1] <= 0.4 * report.model_bytes[0]
    assert report.linear_bytes[1] <= 0.3 * report.linear_bytes[0]
    assert 0 <= report.accuracy.mean_kl < 0.01 and report.accuracy.greedy_agreement >= 0.9
    assert report.speeds[0].batch_size == 2 and report.speeds[0].ratio > 0
    assert "greedy agreement" in report.to_text() and str(out) in report.to_text()
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["weights"] == "int8"
    assert (out / "tokenizer.json").is_file() == (checkpoint / "tokenizer.json").is_file()
    size = (out / "model.safetensors").stat().st_size
    assert size <= 0.4 * (checkpoint / "model.safetensors").stat().st_size
    served = engine(out)  # quantization = "none": the folder's int8 weights are served as such
    model = served.runner.model
    int8_layers = [m for m in model.modules() if isinstance(m, quant.Int8Linear)]
    assert int8_layers and all(m.weight.data_ptr() % 64 == 0 for m in int8_layers)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert served.generate(prompts(), greedy()) == engine(checkpoint, "int8").generate(
        prompts(), greedy()
    )
    with pytest.raises(ConfigError, match="int8-quantized"):
        load_model(out)


def test_optimize_checkpoint_casts_to_bf16(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    report = quant.optimize_checkpoint(checkpoint, "bf16", out, num_tokens=4, batch_sizes=())
    assert report.model_bytes[1] == report.model_bytes[0] // 2
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert LLMEngine.from_config(EngineConfig(model_path=str(out))).runner.dtype == torch.bfloat16


def test_unknown_precision_and_foreign_quantization_are_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="precision 'int4'"):
        quant.optimize_checkpoint(checkpoint, "int4", None)
    foreign = tmp_path / "gptq"
    foreign.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (foreign / "config.json").write_text(json.dumps(config))
    (foreign / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="quantization_config"):
        engine(foreign)
