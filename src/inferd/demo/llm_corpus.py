"""The demo LLM's corpus: English that ships with Python, split into training and held-out
paragraphs, and chat turns rendered from it in Llama 3's template.

The corpus is ``pydoc_data.topics`` (the help texts behind ``help("for")``) plus the module
docstrings of the standard library. No torch here: the tests read the corpus without it.
"""

from __future__ import annotations

import ast
import inspect
import io
import pydoc_data.topics
import sysconfig
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jinja2.sandbox

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS: Final = (BOS, EOS, START_HEADER, END_HEADER, EOT)

VALIDATION_EVERY: Final = 20
"""Every 20th paragraph is held out: 5 % of the corpus."""

# Llama 3's own template, so clients that know Llama 3 chat format see nothing new.
CHAT_TEMPLATE: Final = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Document:
    """One text of the corpus and what it is about (for the chat turns made from it)."""

    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class Corpus:
    """Training texts (documents and chat turns) and held-out texts, in a fixed order."""

    train: list[str]
    chats: list[str]
    validation: list[str]


# --- corpus ----------------------------------------------------------------------------------


def load_corpus() -> Corpus:
    """Python's help topics and module docstrings, split by paragraph into train / validation."""
    train: list[str] = []
    chats: list[str] = []
    validation: list[str] = []
    index = 0
    for document in documents():
        kept: list[str] = []
        for paragraph in _paragraphs(document.text):
            held_out = index % VALIDATION_EVERY == VALIDATION_EVERY - 1
            (validation if held_out else kept).append(paragraph)
            index += 1
        train.append("\n\n".join(kept))
        chat = _chat_turns(document.subject, kept)
        if chat is not None:
            chats.append(chat)
    return Corpus(train, chats, validation)


def documents() -> list[Document]:
    """Help topics sorted by name, then top-level stdlib modules' docstrings sorted by name."""
    topics = pydoc_data.topics.topics
    found = [Document(_topic_title(topics[name]), topics[name]) for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("[!_]*.py")):
        docstring = _module_docstring(path)
        if docstring:
            found.append(Document(f"the {path.stem} module", docstring))
    return found


def _topic_title(text: str) -> str:
    """'The "for" statement' from a topic whose first line is its title (underlined)."""
    first = text.strip().splitlines()[0].strip()
    return first[:1].lower() + first[1:] if first.startswith("The ") else first


def _module_docstring(path: Path) -> str | None:
    """The file's docstring, read from its first tokens (no import, no full parse)."""
    try:
        source = path.read_text(encoding="utf-8")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING):
                continue
            if token.type != tokenize.STRING:
                return None
            value = ast.literal_eval(token.string)
            return inspect.cleandoc(value) if isinstance(value, str) else None
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, tokenize.TokenError):
        return None
    return None


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _chat_turns(subject: str, paragraphs: Sequence[str]) -> str | None:
    """A user asking about ``subject`` and the document's first prose paragraph as the answer."""
    answer = next((p for p in paragraphs if _is_prose(p)), None)
    if answer is None:
        return None
    messages = [
        {"role": "user", "content": f"Tell me about {subject}."},
        {"role": "assistant", "content": " ".join(answer.split())},
    ]
    return render_chat(messages, add_generation_prompt=False)


def _is_prose(paragraph: str) -> bool:
    """Not a title block, code sample or grammar rule: a few lines of sentences."""
    lines = paragraph.splitlines()
    underlined = len(lines) > 1 and set(lines[1].strip()) <= set("*=-")
    indented = paragraph.startswith(" ")
    return not underlined and not indented and paragraph.rstrip().endswith(".")


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """``messages`` through the chat template, as transformers renders it."""
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(CHAT_TEMPLATE)
    return template.render(
        messages=messages, bos_token=BOS, add_generation_prompt=add_generation_prompt
    )
