"""A tiny Llama checkpoint folder for API tests: random weights, a real BPE tokenizer.

The tokenizer is the demo LLM's (byte-level BPE, Llama 3 chat template), trained on a slice of
the same corpus; the weights are random, so the text is gibberish but every code path (chat
template, detokenizing, stop strings, logprobs) is the one a real checkpoint takes.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

from inferd.demo import llm as demo_llm

SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.5,  # wide logits: sampled text differs from greedy text
}


def write_tiny_llama(folder: Path) -> Path:
    """Copy the checkpoint into ``folder`` (created) and return it.

    It is built once per test process (loading the corpus and training the tokenizer take
    seconds) and copied for each caller, who may then add its own ``model.toml``.
    """
    shutil.copytree(_built(), folder, dirs_exist_ok=True)
    return folder


@functools.cache
def _built() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="inferd-tiny-llama-"))
    atexit.register(shutil.rmtree, folder, True)
    corpus = demo_llm.load_corpus()
    tokenizer = demo_llm.train_tokenizer(corpus.train[:60])
    demo_llm.write_tokenizer(tokenizer, folder)
    config = demo_llm.model_config(tokenizer)
    for key, value in SHAPE.items():
        setattr(config, key, value)
    config.head_dim = SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    model.generation_config = demo_llm._generation_config(tokenizer)
    model.save_pretrained(folder)
    return folder
