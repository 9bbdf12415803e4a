"""OutputProcessor: tokens to text deltas, stop strings cut across deltas, finish reasons."""

from __future__ import annotations

import pydoc_data.topics
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from inferd.llm.output import OutputProcessor, TextDelta
from inferd.llm.sampling_params import SamplingParams
from inferd.llm.scheduler import StepOutput
from inferd.llm.sequence import FinishReason
from inferd.llm.tokenizer import Tokenizer

EOS = "<|eot_id|>"
TEXT = "The for statement is used to iterate over the elements of a sequence."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    topics = pydoc_data.topics.topics
    backend.train_from_iterator([topics[k] for k in sorted(topics)[:30]], trainer)
    folder: Path = tmp_path_factory.mktemp("tok")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(f'{{"eos_token": "{EOS}"}}')
    return Tokenizer.from_folder(folder)


def run(
    tokenizer: Tokenizer,
    token_ids: list[int],
    params: SamplingParams,
    last: FinishReason | None = FinishReason.LENGTH,
) -> list[TextDelta]:
    """Feed ``token_ids`` as the engine would, the last one finishing with ``last``."""
    processor = OutputProcessor(tokenizer, tokenizer.encode("Q:"), params)
    deltas = []
    for i, token_id in enumerate(token_ids):
        final = i == len(token_ids) - 1 and last is not None
        out = StepOutput("r", token_id, final, last if final else None)
        deltas.append(processor.push(out))
        if deltas[-1].finished:
            break
    return deltas


def text(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


def test_the_deltas_spell_the_decoded_text(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT)
    deltas = run(tokenizer, ids, SamplingParams())
    assert text(deltas) == tokenizer.decode(ids)
    assert [d.finish_reason for d in deltas] == [None] * (len(ids) - 1) + ["length"]
    assert sum(len(d.token_ids) for d in deltas) == len(ids)


def test_a_stop_string_split_across_tokens_is_cut_and_never_emitted(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT)
    deltas = run(tokenizer, ids, SamplingParams(stop=["iterate over"]), last=None)
    assert text(deltas) == TEXT[: TEXT.index("iterate over")]
    assert deltas[-1].finish_reason == "stop"
    assert len(deltas) < len(ids)  # it ended there: the caller aborts the sequence
    assert all("iter" not in d.text for d in deltas)


def test_held_back_text_comes_out_when_no_stop_string_matches(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT)
    deltas = run(tokenizer, ids, SamplingParams(stop=["sequence!"]))
    assert text(deltas) == TEXT  # "sequence" was held back, then flushed at the end
    assert deltas[-1].finish_reason == "length"


def test_a_stop_token_ends_the_text_without_its_own(tokenizer: Tokenizer) -> None:
    eos = tokenizer.token_id(EOS)
    assert eos is not None
    ids = [*tokenizer.encode("over the"), eos]
    deltas = run(tokenizer, ids, SamplingParams(skip_special_tokens=False), FinishReason.STOP)
    assert text(deltas) == "over the"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].token_ids == [eos]


def test_logprobs_travel_only_when_asked(tokenizer: Tokenizer) -> None:
    asked = OutputProcessor(tokenizer, [], SamplingParams(logprobs=True, top_logprobs=1))
    out = StepOutput("r", 5, False, None, logprob=-0.5, top_logprobs=[(5, -0.5)])
    delta = asked.push(out)
    assert delta.logprobs is not None and delta.logprobs[0].logprob == -0.5
    assert delta.logprobs[0].top == ((5, -0.5),)
    plain = OutputProcessor(tokenizer, [], SamplingParams())
    assert plain.push(out).logprobs is None


def test_pushing_after_the_end_is_a_bug(tokenizer: Tokenizer) -> None:
    processor = OutputProcessor(tokenizer, [], SamplingParams())
    processor.push(StepOutput("r", 5, True, FinishReason.LENGTH))
    with pytest.raises(RuntimeError, match="already finished"):
        processor.push(StepOutput("r", 6, False, None))
