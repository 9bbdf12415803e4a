"""The demo LLM: trained for a few seconds, saved as a folder that inferd and transformers load."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jinja2.sandbox  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from inferd.config import demo_llm_enabled, demo_llm_train_seconds  # noqa: E402
from inferd.demo import build, demo_repository, llm, version_tag  # noqa: E402
from inferd.demo.build import MANIFEST_FILE  # noqa: E402
from inferd.demo.llm import (  # noqa: E402
    CHAT_TEMPLATE,
    REPORT_FILE,
    SAMPLE_PROMPT,
    SPECIAL_TOKENS,
    load_corpus,
)
from inferd.errors import ConfigError  # noqa: E402
from inferd.llm.checkpoint import load_arch_config  # noqa: E402
from inferd.llm.engine import EngineConfig, LLMEngine  # noqa: E402
from inferd.llm.models.registry import load_model  # noqa: E402
from inferd.llm.sampling import SamplingParams  # noqa: E402

TRAIN_SECONDS = "8"
FOLDER_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    REPORT_FILE,
}
MESSAGES = [
    {"role": "system", "content": "You answer questions about Python."},
    {"role": "user", "content": "What does the for statement do? "},
]
RENDERED = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You answer questions about Python.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "What does the for statement do?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole demo repository, its LLM trained for a few seconds, in a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("INFERD_DEMO_LLM", "1")
        mp.setenv("INFERD_DEMO_LLM_TRAIN_S", TRAIN_SECONDS)
        # One thread: on a machine busy with other work, torch's threads wait on each other at
        # every op (8x slower here); one thread just runs slower, so the test stays ~20 s.
        mp.setattr(llm, "usable_cpus", lambda: 1)
        yield demo_repository()


@pytest.fixture(scope="module")
def folder(repo: Path) -> Path:
    return repo / "tiny_llama"


@pytest.fixture(scope="module")
def report(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / REPORT_FILE).read_text())
    return data


# --- wiring into the demo build ----------------------------------------------------------------


def test_built_into_the_demo_repository(repo: Path, folder: Path) -> None:
    assert repo.name.endswith(f"-llm{TRAIN_SECONDS}s")
    assert {p.name for p in folder.iterdir()} == FOLDER_FILES
    manifest = json.loads((repo / MANIFEST_FILE).read_text())
    assert manifest["tiny_llama"] == {"backend": "llm", "accuracy": None}


def test_version_tag_names_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERD_DEMO_LLM", "1")
    monkeypatch.setenv("INFERD_DEMO_LLM_TRAIN_S", "180")
    default = version_tag()
    monkeypatch.setenv("INFERD_DEMO_LLM_TRAIN_S", "600")
    longer = version_tag()
    monkeypatch.setenv("INFERD_DEMO_LLM", "0")
    without = version_tag()
    assert default.endswith("-llm180s") and longer.endswith("-llm600s")
    assert "-llm" not in without
    assert default.removesuffix("-llm180s") == without


def test_skipped_with_a_warning_without_transformers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(build, "LLM_PACKAGES", ("torch", "no_such_package_for_inferd"))
    with caplog.at_level(logging.WARNING, logger="inferd.demo"):
        assert build._llm_builders() == {}
    assert "skipping the demo LLM" in caplog.text


def test_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERD_DEMO_LLM", raising=False)
    monkeypatch.delenv("INFERD_DEMO_LLM_TRAIN_S", raising=False)
    # On by default; off when asked.
    assert demo_llm_enabled() and demo_llm_train_seconds() == 180.0
    for on in ("1", "true", "ON"):
        monkeypatch.setenv("INFERD_DEMO_LLM", on)
        assert demo_llm_enabled()
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv("INFERD_DEMO_LLM", off)
        assert not demo_llm_enabled()
    monkeypatch.setenv("INFERD_DEMO_LLM", "maybe")
    with pytest.raises(ConfigError, match="INFERD_DEMO_LLM"):
        demo_llm_enabled()
    for bad in ("0", "-5", "soon", "nan", "inf"):
        monkeypatch.setenv("INFERD_DEMO_LLM_TRAIN_S", bad)
        with pytest.raises(ConfigError, match="INFERD_DEMO_LLM_TRAIN_S"):
            demo_llm_train_seconds()


# --- corpus ------------------------------------------------------------------------------------


def test_corpus_is_fixed_and_holds_out_about_five_percent() -> None:
    corpus = load_corpus()
    assert corpus == load_corpus()
    train = sum(len(text) for text in corpus.train)
    held_out = sum(len(text) for text in corpus.validation)
    assert train > 400_000
    assert 0.02 < held_out / (train + held_out) < 0.1
    assert all(chat.endswith("<|eot_id|>") for chat in corpus.chats)


# --- the folder --------------------------------------------------------------------------------


def test_inferd_loads_the_checkpoint(folder: Path) -> None:
    config = load_arch_config(folder)
    assert config.architecture == "LlamaForCausalLM"
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (4, 2, 64)
    assert config.tie_word_embeddings
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert config.vocab_size == tokenizer.get_vocab_size()
    assert config.bos_token_id == tokenizer.token_to_id("<|begin_of_text|>")
    assert set(config.eos_token_ids) == {
        tokenizer.token_to_id("<|end_of_text|>"),
        tokenizer.token_to_id("<|eot_id|>"),
    }
    model, _ = load_model(folder)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    "text",
    [
        "The for statement is used to iterate over the elements of a sequence.",
        "    for x in range(10):\n        print(x ** 2)  # squares\n",
        "naïve café, ünïcode ✓ and 数字 survive the round trip",
    ],
)
def test_tokenizer_round_trips(folder: Path, text: str) -> None:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    assert ids[0] == tokenizer.token_to_id("<|begin_of_text|>")  # add_bos_token, as Llama 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_are_single_tokens(folder: Path) -> None:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.encode(token, add_special_tokens=False).ids == [token_id]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["bos_token"] == "<|begin_of_text|>" and config["add_bos_token"] is True
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 4]


def test_chat_template_renders_with_jinja2(folder: Path) -> None:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    rendered = env.from_string(config["chat_template"]).render(
        messages=MESSAGES, bos_token=config["bos_token"], add_generation_prompt=True
    )
    assert rendered == RENDERED


def test_transformers_tokenizer_agrees(folder: Path) -> None:
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "The while statement is used for repeated execution."
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text).ids
    assert hf_tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    ) == (RENDERED)


def test_inferd_tokenizer_renders_chats(folder: Path) -> None:
    from inferd.llm.tokenizer import Tokenizer as InferdTokenizer

    tokenizer = InferdTokenizer.from_folder(folder)
    assert tokenizer.apply_chat_template(MESSAGES) == RENDERED
    assert tokenizer.token_id("<|eot_id|>") in tokenizer.eos_token_ids


# --- training ----------------------------------------------------------------------------------


def test_validation_loss_went_down(report: dict[str, float]) -> None:
    assert report["steps"] > 0 and report["tokens_per_s"] > 0
    assert report["validation_loss_after"] < report["validation_loss_before"]
    assert report["validation_perplexity_after"] < report["validation_perplexity_before"]
    assert report["budget_s"] == float(TRAIN_SECONDS)
    assert report["sample_prompt"] == SAMPLE_PROMPT


def test_transformers_generates_greedily(folder: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer(SAMPLE_PROMPT, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert output.shape[1] > prompt_length
    assert isinstance(tokenizer.decode(output[0, prompt_length:]), str)


def test_inferd_engine_generates_what_transformers_would(folder: Path) -> None:
    engine = LLMEngine.from_config(EngineConfig(model_path=str(folder), kv_cache_bytes=8 << 20))
    prompt = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(SAMPLE_PROMPT).ids
    (tokens,) = engine.generate(
        [prompt], SamplingParams(max_tokens=8, ignore_eos=True, temperature=0.0)
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    # Each token inferd picked is transformers' argmax too (up to fp32 rounding in a near-tie).
    picked = logits[torch.arange(len(tokens)), torch.tensor(tokens)]
    assert torch.all(picked >= logits.max(dim=-1).values - 1e-4)
