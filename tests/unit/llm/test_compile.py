"""``[llm] compile``: the model through torch.compile decodes what the eager model decodes,
with one compiled graph for every shape of step."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")  # save_tiny_checkpoint writes with it

from tiny_configs import save_tiny_checkpoint, tiny_engine  # noqa: E402

from inferd.errors import ConfigError  # noqa: E402
from inferd.llm.attention import attend  # noqa: E402
from inferd.llm.engine import EngineConfig, LLMEngine  # noqa: E402
from inferd.llm.sampling import SamplingParams  # noqa: E402


def _engine(path: Path, **overrides: object) -> LLMEngine:
    # A small budget chunks the long prompt: steps that sample no row, some that mix a
    # prefill chunk with decodes, then decodes alone.
    return tiny_engine(path, max_num_batched_tokens=16, pack_weights=False, **overrides)


@pytest.mark.timeout(400)  # compiling, and on a fresh machine building the kernel
@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_the_compiled_model_decodes_the_eager_models_tokens_with_one_graph(
    tmp_path: Path, architecture: str
) -> None:
    from torch._dynamo.utils import counters

    save_tiny_checkpoint(tmp_path, architecture)
    eager = _engine(tmp_path)
    counters.clear()
    compiled = _engine(tmp_path, compile=True)  # compiles in its warm-up
    assert counters["stats"]["unique_graphs"] == 1
    assert compiled.runner.decode_kernel is not None  # decodes attend natively below
    assert compiled.num_steps == 0 and compiled.num_generation_tokens == 0
    prompts = [[5, 9, 17, 33, 2, 8], [40, 41, 42], list(range(3, 30)), [7]]
    greedy = SamplingParams(max_tokens=12, ignore_eos=True, temperature=0.0)
    assert compiled.generate(prompts, greedy) == eager.generate(prompts, greedy)
    assert compiled.generate(prompts[3:], greedy) == eager.generate(prompts[3:], greedy)
    assert counters["stats"]["unique_graphs"] == 1  # no shape since has recompiled


@pytest.mark.timeout(400)
def test_a_machine_that_cannot_compile_gets_a_config_error_naming_the_cause(
    tmp_path: Path,
) -> None:
    from torch._inductor import config as inductor_config

    save_tiny_checkpoint(tmp_path)
    no_compiler = {"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}
    with (
        inductor_config.patch(no_compiler),
        pytest.raises(
            ConfigError,
            match=r"compile = true, but compiling the model failed: .*No working C\+\+ compiler",
        ),
    ):
        _engine(tmp_path, compile=True)


def test_compile_refuses_quantized_weights(tmp_path: Path) -> None:
    config = EngineConfig(model_path=str(tmp_path), compile=True, quantization="int8")
    with pytest.raises(ConfigError, match="compile = true with quantization = 'int8'"):
        config.validate()


def test_attention_outside_a_step_says_what_is_missing() -> None:
    q = torch.zeros(1, 2, 4)
    with pytest.raises(RuntimeError, match=r"outside a step: .*step_context"):
        attend(q, q, q, 0)


def test_compile_is_read_from_the_llm_table(tmp_path: Path) -> None:
    from inferd.config import model_config_from_dict

    read = model_config_from_dict(
        {"backend": "llm", "llm": {"compile": True}}, tmp_path, "m", "model.toml"
    )
    assert read["llm"].compile is True
    default = model_config_from_dict({"backend": "llm"}, tmp_path, "m", "model.toml")
    assert default["llm"].compile is False
    with pytest.raises(ConfigError, match="compile"):
        model_config_from_dict({"backend": "llm", "llm": {"compile": 1}}, tmp_path, "m", "m.toml")
