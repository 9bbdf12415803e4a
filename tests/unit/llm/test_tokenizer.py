"""The tokenizer wrapper, chat templates, incremental detokenization and stop strings.

Tokenizers are trained here on the text of pydoc's topics (no hub): a byte-level BPE with a
Llama-3-style config, and a sentencepiece-style BPE with byte fallback (Llama-2-style).
"""

from __future__ import annotations

import itertools
import json
import pydoc_data.topics
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from inferd.errors import ConfigError, InvalidRequest
from inferd.llm.tokenizer import (
    INCOMPLETE,
    IncrementalDetokenizer,
    StopStringMatcher,
    Tokenizer,
    validate_messages,
)

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
MIXED_TEXT = (
    "Unicode: naïve café 😀 and 🇫🇷, a family 👩‍👩‍👧, 東京タワー 🍣 and 世界!\n"
    "def f(x):\n    return x ** 2  # tabs\tand   spaces"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  What is 😀 in 日本語?  "},
    {"role": "assistant", "content": [{"type": "text", "text": "A smile."}]},
    {"role": "user", "content": "Thanks <3 & bye"},
]


def _corpus() -> list[str]:
    topics = pydoc_data.topics.topics
    return [topics[name] for name in sorted(topics)[:40]]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _byte_level_backend() -> Backend:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=LLAMA3_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_corpus(), trainer)
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 0)]
    )
    return backend


def _sentencepiece_backend() -> Backend:
    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"])
    backend.train_from_iterator(_corpus(), trainer)
    # Byte fallback: every byte gets a <0xNN> token for characters the corpus never had.
    data = json.loads(backend.to_str())
    vocab = data["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    data["model"]["byte_fallback"] = True
    return Backend.from_str(json.dumps(data))


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama3-tokenizer")
    _byte_level_backend().save(str(folder / "tokenizer.json"))
    eos = {"__type": "AddedToken", "content": "<|eot_id|>", "special": True}
    config = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": eos,
        "chat_template": LLAMA3_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(folder / "generation_config.json", {"eos_token_id": [1, 4]})
    _write_json(folder / "config.json", {"eos_token_id": 1, "bos_token_id": 0})
    return folder


@pytest.fixture(scope="module")
def llama2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama2-tokenizer")
    _sentencepiece_backend().save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
    _write_json(folder / "tokenizer_config.json", config)
    return folder


@pytest.fixture(scope="module")
def llama3(llama3_folder: Path) -> Tokenizer:
    return Tokenizer.from_folder(llama3_folder)


@pytest.fixture(scope="module")
def llama2(llama2_folder: Path) -> Tokenizer:
    return Tokenizer.from_folder(llama2_folder)


def _transformers(folder: Path) -> PreTrainedTokenizerFast:
    """The reference: transformers' fast tokenizer given tokenizer.json and the config's keys."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    keys = ("bos_token", "eos_token", "unk_token", "add_bos_token", "chat_template")
    kwargs = {k: v["content"] if isinstance(v, dict) else v for k, v in config.items() if k in keys}
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **kwargs)


def test_special_tokens_and_eos_ids_come_from_every_config(llama3: Tokenizer) -> None:
    assert llama3.special_tokens == {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    assert llama3.bos_token_id == 0
    assert llama3.eos_token_ids == (1, 4)
    assert llama3.eos_token_id == 1
    assert llama3.vocab_size == 800
    assert llama3.has_chat_template


TEXTS = [MIXED_TEXT, "", " leading space", "<|eot_id|> inline special", "tail \n\n", "a" * 50]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("name", ["llama3", "llama2"])
def test_encode_and_decode_match_transformers(
    name: str, text: str, request: pytest.FixtureRequest
) -> None:
    folder: Path = request.getfixturevalue(f"{name}_folder")
    ours: Tokenizer = request.getfixturevalue(name)
    theirs = _transformers(folder)
    for add_special in (True, False):
        ids = ours.encode(text, add_special_tokens=add_special)
        assert ids == theirs.encode(text, add_special_tokens=add_special)
        for skip in (True, False):
            assert ours.decode(ids, skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_add_bos_token_is_honoured(llama2: Tokenizer, llama2_folder: Path) -> None:
    assert llama2.encode("hello")[0] == llama2.bos_token_id
    assert llama2.encode("hello", add_special_tokens=False)[0] != llama2.bos_token_id
    assert llama2.decode(llama2.encode("hello")) == "hello"


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(
    llama3: Tokenizer, llama3_folder: Path, add_generation_prompt: bool
) -> None:
    theirs = _transformers(llama3_folder)
    # transformers passes content parts to the template as they are; we flatten them first.
    flat = validate_messages(MESSAGES)
    expected = theirs.apply_chat_template(
        flat, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    rendered = llama3.apply_chat_template(MESSAGES, add_generation_prompt)
    assert rendered == expected
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system")
    assert llama3.encode_chat(MESSAGES, add_generation_prompt) == theirs.encode(
        expected, add_special_tokens=False
    )


def test_a_model_without_template_gets_the_default(llama2: Tokenizer) -> None:
    assert not llama2.has_chat_template
    rendered = llama2.apply_chat_template(MESSAGES[:2])
    assert rendered == "<s>System: You are terse.\n\nUser:   What is 😀 in 日本語?  \n\nAssistant:"
    assert llama2.encode_chat(MESSAGES[:2]).count(llama2.bos_token_id) == 1


def test_template_helpers_and_named_templates(llama3_folder: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "generation_config.json"):
        (tmp_path / name).write_bytes((llama3_folder / name).read_bytes())
    template = (
        "{% if messages | length > 2 %}{{ raise_exception('too many') }}{% endif %}"
        "{{ messages | tojson }}|{{ strftime_now('%Y') | length }}"
    )
    named = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": template}]
    _write_json(tmp_path / "tokenizer_config.json", {"chat_template": named})
    tokenizer = Tokenizer.from_folder(tmp_path)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "<é>"}])
    assert rendered == '[{"role": "user", "content": "<é>"}]|4'
    with pytest.raises(InvalidRequest, match="too many"):
        tokenizer.apply_chat_template(MESSAGES)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].content }}!")
    assert Tokenizer.from_folder(tmp_path).apply_chat_template(MESSAGES) == "You are terse.!"


def test_templates_run_sandboxed(llama3_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_bytes((llama3_folder / "tokenizer.json").read_bytes())
    template = "{{ messages.__class__.__mro__ }}{{ messages.append(1) }}"
    _write_json(tmp_path / "tokenizer_config.json", {"chat_template": template})
    with pytest.raises(InvalidRequest, match="chat template"):
        Tokenizer.from_folder(tmp_path).apply_chat_template(MESSAGES)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must be a non-empty list"),
        ("hello", "messages must be a non-empty list"),
        ([{"role": "user", "content": "a"}, "b"], "messages[1] must be an object"),
        ([{"role": "bot", "content": "a"}], "messages[0].role must be one of system, user"),
        ([{"content": "a"}], "messages[0].role must be one of"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], "messages[1].content must be"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content must be"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content must be"),
    ],
)
def test_invalid_messages_name_the_index(messages: Any, message: str, llama3: Tokenizer) -> None:
    with pytest.raises(InvalidRequest) as info:
        llama3.apply_chat_template(messages)
    assert message in str(info.value)


def test_messages_are_normalised() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "42", "tool_call_id": "1"},
    ]
    assert validate_messages(messages) == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "42", "tool_call_id": "1"},
    ]


def _copy(src: Path, dst: Path, *names: str) -> None:
    for name in names:
        (dst / name).write_bytes((src / name).read_bytes())


def test_missing_and_broken_files_are_config_errors(llama3_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.json: file not found"):
        Tokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": 3}')
    with pytest.raises(ConfigError, match=r"tokenizer\.json: not a valid tokenizer"):
        Tokenizer.from_folder(tmp_path)
    _copy(llama3_folder, tmp_path, "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"tokenizer_config\.json: cannot read JSON"):
        Tokenizer.from_folder(tmp_path)
    _write_json(tmp_path / "tokenizer_config.json", {"chat_template": 7})
    with pytest.raises(ConfigError, match=r"tokenizer_config\.json: chat_template must be"):
        Tokenizer.from_folder(tmp_path)
    _write_json(tmp_path / "tokenizer_config.json", {"chat_template": "{% for %}"})
    with pytest.raises(
        ConfigError, match=r"tokenizer_config\.json: chat template does not compile"
    ):
        Tokenizer.from_folder(tmp_path)
    _write_json(tmp_path / "tokenizer_config.json", {})
    _write_json(tmp_path / "generation_config.json", {"eos_token_id": "</s>"})
    with pytest.raises(ConfigError, match=r"generation_config\.json: eos_token_id must be"):
        Tokenizer.from_folder(tmp_path)
    _write_json(tmp_path / "generation_config.json", [1])
    with pytest.raises(ConfigError, match=r"generation_config\.json: expected a JSON object"):
        Tokenizer.from_folder(tmp_path)


def _stream(detokenizer: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detokenizer.push(token_id) for token_id in ids]


@pytest.mark.parametrize("name", ["llama3", "llama2"])
def test_incremental_text_equals_full_decode_at_every_complete_prefix(
    name: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(name)
    ids = tokenizer.encode(MIXED_TEXT, add_special_tokens=False)
    deltas = _stream(IncrementalDetokenizer(tokenizer), ids)
    assert not any(INCOMPLETE in delta for delta in deltas)
    partial_prefixes = 0
    for k in range(1, len(ids) + 1):
        full = tokenizer.decode(ids[:k])
        if full.endswith(INCOMPLETE):
            partial_prefixes += 1
        else:
            assert "".join(deltas[:k]) == full, f"after {k} tokens"
    assert partial_prefixes > 0, "the text must split characters across tokens"
    assert "".join(deltas) == MIXED_TEXT


@pytest.mark.parametrize("name", ["llama3", "llama2"])
def test_deltas_after_any_prompt_continue_its_text(
    name: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(name)
    ids = tokenizer.encode("Question: why? Because 日本 😀 is ok", add_special_tokens=False)
    full = tokenizer.decode(ids)
    for split in range(1, len(ids)):
        prompt = tokenizer.decode(ids[:split])
        if prompt.endswith(INCOMPLETE):
            continue
        deltas = _stream(IncrementalDetokenizer(tokenizer, ids[:split]), ids[split:])
        # The first delta keeps its leading space, which decoding it alone would strip.
        assert prompt + "".join(deltas) == full, f"prompt of {split} tokens"


def test_special_tokens_are_skipped_or_kept(llama3: Tokenizer) -> None:
    ids = llama3.encode("Hi<|eot_id|>", add_special_tokens=False)
    assert "".join(_stream(IncrementalDetokenizer(llama3), ids)) == "Hi"
    kept = IncrementalDetokenizer(llama3, skip_special_tokens=False)
    assert "".join(_stream(kept, ids)) == "Hi<|eot_id|>"


def test_flush_emits_a_trailing_incomplete_character(llama3: Tokenizer) -> None:
    ids = llama3.encode("ok 😀", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(llama3)
    text = "".join(_stream(detokenizer, ids[:-1]))
    assert text == "ok "
    assert detokenizer.flush() == llama3.decode(ids[:-1])[len("ok ") :]
    assert detokenizer.flush() == ""


def _run_matcher(stops: list[str], chunks: list[str]) -> tuple[str, str | None]:
    matcher = StopStringMatcher(stops)
    emitted = []
    for chunk in chunks:
        check = matcher.push(chunk)
        emitted.append(check.text)
        if check.stopped:
            return "".join(emitted), check.stop
    return "".join(emitted) + matcher.flush(), None


def _splits(text: str) -> list[list[str]]:
    """Every way to cut ``text`` into three chunks."""
    cuts = itertools.combinations_with_replacement(range(len(text) + 1), 2)
    return [[text[:a], text[a:b], text[b:]] for a, b in cuts]


@pytest.mark.parametrize(
    ("text", "expected", "stop"),
    [
        ("Say END now", "Say ", "END"),
        ("one\n\ntwo END", "one", "\n\n"),
        ("aaab", "a", "aab"),
        ("no stop here EN", "no stop here EN", None),
        ("ENDING? END", "", "END"),
    ],
)
def test_stop_strings_split_across_deltas_are_caught(
    text: str, expected: str, stop: str | None
) -> None:
    stops = ["END", "\n\n", "aab"]
    for chunks in _splits(text):
        assert _run_matcher(stops, chunks) == (expected, stop), chunks


def test_no_emitted_delta_holds_part_of_a_stop() -> None:
    matcher = StopStringMatcher(["<stop>"])
    assert matcher.push("abc<s").text == "abc"
    assert matcher.push("to").text == ""
    check = matcher.push("p>tail")
    assert check.text == "" and check.stop == "<stop>"
    assert matcher.push("more").text == ""


def test_a_false_start_is_released() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.push("STO").text == ""
    assert matcher.push("RM").text == "STORM"
    assert matcher.flush() == ""


def test_without_stops_everything_passes() -> None:
    matcher = StopStringMatcher([])
    assert matcher.push("anything").text == "anything"
    assert not matcher.push("").stopped
