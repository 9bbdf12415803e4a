"""The demo LLM: a small Llama with its own tokenizer, trained on English that ships with Python.

The corpus (``llm_corpus``) is Python's help topics and module docstrings, with a few chat turns
rendered from them so the model learns the chat template and to end its turn. Every 20th
paragraph is held out (5 %) to measure validation loss before and after training. Training
runs for a time budget, not a step count, so what the model learns depends on the machine;
``demo_llm.json`` records it.

Imported only when torch and transformers are installed: transformers' ``LlamaForCausalLM``
is the reference the weights are trained with; inferd serves them with its own code.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from inferd.config import usable_cpus
from inferd.demo.llm_corpus import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    EOT,
    SPECIAL_TOKENS,
    load_corpus,
)
from inferd.llm.device import compute_threads

logger = logging.getLogger("inferd.demo")

SEED: Final = 0
REPORT_FILE: Final = "demo_llm.json"
VOCAB_SIZE: Final = 4096
WINDOW: Final = 128
BATCH_SIZE: Final = 8
LEARNING_RATE: Final = 2e-3
WARMUP_STEPS: Final = 10
MIN_STEPS: Final = 10
"""Even a tiny budget on a busy machine trains this far, so the loss has moved."""
MIN_LR_FRACTION: Final = 0.1
MAX_VALIDATION_WINDOWS: Final = 64
SAMPLE_PROMPT: Final = "The for statement"
SAMPLE_TOKENS: Final = 40
LOG_EVERY_S: Final = 30.0

ARCHITECTURE: Final[dict[str, Any]] = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


@dataclass(frozen=True, slots=True)
class TrainingStats:
    """How much training the time budget bought."""

    seconds: float
    steps: int
    tokens: int
    tokens_per_s: float


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """What ``demo_llm.json`` says: how long it trained and how good it got."""

    budget_s: float
    seconds: float
    steps: int
    tokens: int
    tokens_per_s: float
    threads: int
    parameters: int
    vocab_size: int
    train_tokens: int
    validation_tokens: int
    validation_loss_before: float
    validation_perplexity_before: float
    validation_loss_after: float
    validation_perplexity_after: float
    sample_prompt: str
    sample_continuation: str


def build_tiny_llama(folder: Path, train_seconds: float) -> TrainingReport:
    """Train the tokenizer and the model, and save them as a Hugging Face folder in ``folder``."""
    corpus = load_corpus()
    tokenizer = train_tokenizer(corpus.train)
    write_tokenizer(tokenizer, folder)
    train_ids = torch.tensor(_token_stream(tokenizer, corpus.train, corpus.chats))
    validation = _windows(torch.tensor(_token_stream(tokenizer, corpus.validation, [])))
    with torch.random.fork_rng(devices=[]), compute_threads(usable_cpus()):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(model_config(tokenizer))
        loss_before = validation_loss(model, validation)
        stats = train(model, train_ids, train_seconds)
        loss_after = validation_loss(model, validation)
        sample = greedy_continuation(model, tokenizer, SAMPLE_PROMPT)
    model.generation_config = _generation_config(tokenizer)
    _save(model, folder)
    report = TrainingReport(
        budget_s=train_seconds,
        **asdict(stats),
        threads=usable_cpus(),
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=tokenizer.get_vocab_size(),
        train_tokens=train_ids.numel(),
        validation_tokens=validation.numel(),
        validation_loss_before=round(loss_before, 4),
        validation_perplexity_before=round(math.exp(loss_before), 2),
        validation_loss_after=round(loss_after, 4),
        validation_perplexity_after=round(math.exp(loss_after), 2),
        sample_prompt=SAMPLE_PROMPT,
        sample_continuation=sample,
    )
    (folder / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    _log_report(report)
    return report


# --- tokenizer -------------------------------------------------------------------------------


def train_tokenizer(texts: Sequence[str]) -> Tokenizer:
    """Byte-level BPE over ``texts``; the special tokens take ids 0-4; encoding adds bos."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, _id(tokenizer, BOS))],
    )
    return tokenizer


def write_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    """``tokenizer.json`` plus the ``tokenizer_config.json`` that names bos, eos and template."""
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": ARCHITECTURE["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    assert token_id is not None, token  # the trainer was given every special token
    return int(token_id)


def _token_stream(tokenizer: Tokenizer, texts: Sequence[str], chats: Sequence[str]) -> list[int]:
    """Each text as bos + text + eos, then each chat (its template writes bos), end to end."""
    bos, eos = _id(tokenizer, BOS), _id(tokenizer, EOS)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream += [bos, *encoding.ids, eos]
    for encoding in tokenizer.encode_batch(list(chats), add_special_tokens=False):
        stream += [*encoding.ids, eos]
    return stream


# --- model -----------------------------------------------------------------------------------


def model_config(tokenizer: Tokenizer) -> LlamaConfig:
    """The small Llama: ~4.2 M parameters, a quarter of them the (tied) token embedding."""
    return LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=_id(tokenizer, BOS),
        eos_token_id=[_id(tokenizer, EOS), _id(tokenizer, EOT)],
        **ARCHITECTURE,
    )


def _generation_config(tokenizer: Tokenizer) -> GenerationConfig:
    # Both ids end generation: end_of_text after plain text, eot_id after a chat turn.
    return GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=_id(tokenizer, BOS),
        eos_token_id=[_id(tokenizer, EOS), _id(tokenizer, EOT)],
        pad_token_id=_id(tokenizer, EOS),
    )


def train(model: LlamaForCausalLM, stream: torch.Tensor, seconds: float) -> TrainingStats:
    """AdamW on random ``WINDOW``-token windows until ``seconds`` pass (``MIN_STEPS`` at least)."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95), weight_decay=0.1
    )
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    start = last_log = time.perf_counter()
    steps = 0
    while (elapsed := time.perf_counter() - start) < seconds or steps < MIN_STEPS:
        _set_lr(optimizer, steps, elapsed / seconds)
        batch = _random_windows(stream, generator)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps += 1
        if time.perf_counter() - last_log >= LOG_EVERY_S:
            last_log = time.perf_counter()
            logger.info(
                "demo LLM: %.0f s, step %d, training loss %.3f", elapsed, steps, loss.item()
            )
    model.train(False)
    tokens = steps * BATCH_SIZE * WINDOW
    return TrainingStats(round(elapsed, 2), steps, tokens, round(tokens / elapsed, 1))


def _set_lr(optimizer: torch.optim.Optimizer, step: int, progress: float) -> None:
    """Linear warm-up, then cosine decay over the time budget (the step count is unknown)."""
    warmup = min(1.0, (step + 1) / WARMUP_STEPS)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    scale = warmup * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * cosine)
    for group in optimizer.param_groups:
        group["lr"] = LEARNING_RATE * scale


def _random_windows(stream: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, stream.numel() - WINDOW, (BATCH_SIZE,), generator=generator)
    return torch.stack([stream[s : s + WINDOW] for s in starts.tolist()])


def _windows(stream: torch.Tensor) -> torch.Tensor:
    """The stream cut into whole windows (at most ``MAX_VALIDATION_WINDOWS``), one per row."""
    count = min(stream.numel() // WINDOW, MAX_VALIDATION_WINDOWS)
    return stream[: count * WINDOW].view(count, WINDOW)


@torch.inference_mode()
def validation_loss(model: LlamaForCausalLM, windows: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over the held-out windows."""
    model.train(False)
    batches = torch.split(windows, BATCH_SIZE)
    total = sum(float(model(input_ids=b, labels=b).loss) * len(b) for b in batches)
    return total / len(windows)


@torch.inference_mode()
def greedy_continuation(model: LlamaForCausalLM, tokenizer: Tokenizer, prompt: str) -> str:
    """The model's greedy continuation of ``prompt`` (bos added), without the prompt."""
    ids = tokenizer.encode(prompt).ids
    prompt_length = len(ids)
    for _ in range(SAMPLE_TOKENS):
        logits = model(input_ids=torch.tensor([ids])).logits
        next_id = int(logits[0, -1].argmax())
        if next_id in (_id(tokenizer, EOS), _id(tokenizer, EOT)):
            break
        ids.append(next_id)
    return str(tokenizer.decode(ids[prompt_length:], skip_special_tokens=True))


def _save(model: LlamaForCausalLM, folder: Path) -> None:
    """``save_pretrained`` (safetensors: the default, and the only format of transformers 5)."""
    # Its progress bar would land in the server's log as a stray line of tqdm output.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(folder)
        for weights in folder.glob("*.safetensors"):
            weights.chmod(0o644)  # written through a private temporary file; it is plain data
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _log_report(report: TrainingReport) -> None:
    logger.info(
        "demo LLM: %d steps in %.0f s (%.0f tokens/s on %d threads); validation loss "
        "%.3f -> %.3f (perplexity %.1f -> %.1f); %r continues as %r",
        report.steps,
        report.seconds,
        report.tokens_per_s,
        report.threads,
        report.validation_loss_before,
        report.validation_loss_after,
        report.validation_perplexity_before,
        report.validation_perplexity_after,
        report.sample_prompt,
        report.sample_continuation,
    )
