"""Text in and out of an LLM: a Hugging Face tokenizer folder, chat templates, streaming decode.

``Tokenizer`` reads ``tokenizer.json`` with the ``tokenizers`` library (no transformers at run
time) plus the optional ``tokenizer_config.json``, ``chat_template.jinja``,
``generation_config.json`` and ``config.json``. ``IncrementalDetokenizer`` turns one sequence's
tokens into text deltas; ``StopStringMatcher`` cuts them at OpenAI stop strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as Backend

from inferd.errors import ConfigError, InvalidRequest

ROLES = ("system", "user", "assistant", "tool")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message.role | capitalize }}: {{ message.content }}\n\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""For models without a template: ``Role: content`` paragraphs, then ``Assistant:``."""
CONTEXT_TOKENS = 5
"""Prompt tokens a detokenizer decodes before the output, so the first delta keeps its space."""
INCOMPLETE = "\ufffd"
"""What a decoder emits for the bytes of a character that is not complete yet."""


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    # Templates expect plain json.dumps; jinja's own tojson HTML-escapes '<', '>' and '&'.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)


def _jinja_environment() -> ImmutableSandboxedEnvironment:
    """The environment transformers renders chat templates in: sandboxed, trimmed blocks."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


_JINJA = _jinja_environment()


class Tokenizer:
    """A model's tokenizer, special tokens and chat template. Build it with ``from_folder``."""

    def __init__(
        self,
        backend: Backend,
        special_tokens: Mapping[str, str],
        chat_template: str | None = None,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.backend = backend
        self.special_tokens = dict(special_tokens)
        """``bos_token`` / ``eos_token`` / ``unk_token`` / ``pad_token`` strings that exist."""
        self.has_chat_template = chat_template is not None
        bos_prefix = "{{ bos_token }}" if self._adds_bos() else ""
        self._template = _JINJA.from_string(chat_template or bos_prefix + DEFAULT_CHAT_TEMPLATE)
        own_eos = self.token_id(self.special_tokens.get("eos_token"))
        ids = [*eos_token_ids, *([own_eos] if own_eos is not None else [])]
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(ids))
        """Every id that ends generation: generation_config, config, then the eos token."""

    @classmethod
    def from_folder(cls, path: str | Path) -> Tokenizer:
        """Load a Hugging Face tokenizer folder; ``ConfigError`` names any missing/broken file."""
        folder = Path(path)
        backend = _load_backend(folder / "tokenizer.json")
        config = _read_json(folder / "tokenizer_config.json") or {}
        special = _special_tokens(backend, config)
        _apply_bos_eos_flags(backend, config, special)
        eos_ids = [*_eos_ids(folder / "generation_config.json"), *_eos_ids(folder / "config.json")]
        template, source = _chat_template(folder, config)
        try:
            return cls(backend, special, template, eos_ids)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{source}: chat template does not compile: {exc}") from exc

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id(self.special_tokens.get("bos_token"))

    @property
    def eos_token_id(self) -> int | None:
        """The main eos id (generation_config's first); all of them are in ``eos_token_ids``."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render ``messages`` (OpenAI chat format, validated) with the model's chat template.

        Encode the result with ``add_special_tokens=False`` (or use ``encode_chat``): templates
        write their own bos token, and the default one does when plain ``encode`` would.
        """
        context = {**self.special_tokens, "add_generation_prompt": add_generation_prompt}
        try:
            return str(self._template.render(messages=validate_messages(messages), **context))
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the chat template rejected the messages: {exc}") from exc

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), False)

    def _adds_bos(self) -> bool:
        bos = self.bos_token_id
        return bos is not None and self.encode("x")[:1] == [bos]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    """An optional JSON object file: None when it is missing, ``ConfigError`` when broken."""
    if not path.is_file():
        return None
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_backend(path: Path) -> Backend:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (inferd needs a fast tokenizer.json)")
    try:
        return Backend.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on bad files
        raise ConfigError(f"{path}: not a valid tokenizer: {exc}") from exc


def _special_tokens(backend: Backend, config: Mapping[str, Any]) -> dict[str, str]:
    """The named special tokens that exist in the vocabulary, registered as special there."""
    special: dict[str, str] = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = config.get(key)
        content = value.get("content") if isinstance(value, Mapping) else value
        if not isinstance(content, str) or backend.token_to_id(content) is None:
            continue
        special[key] = content
        # As transformers does: so that skip_special_tokens drops them on decode.
        backend.add_special_tokens([AddedToken(content, special=True, normalized=False)])
    return special


def _apply_bos_eos_flags(
    backend: Backend, config: Mapping[str, Any], special: Mapping[str, str]
) -> None:
    """Honour ``add_bos_token`` / ``add_eos_token`` by rebuilding the post-processor, as HF does."""
    if "add_bos_token" not in config and "add_eos_token" not in config:
        return  # tokenizer.json's own post-processor decides
    bos = special.get("bos_token") if config.get("add_bos_token") else None
    eos = special.get("eos_token") if config.get("add_eos_token") else None

    def template(sequence: str, type_id: int) -> str:
        return " ".join(f"{part}:{type_id}" for part in (bos, sequence, eos) if part)

    single, pair = template("$A", 0), template("$A", 0) + " " + template("$B", 1)
    tokens = [(t, backend.token_to_id(t)) for t in dict.fromkeys(t for t in (bos, eos) if t)]
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=tokens
    )


def _eos_ids(path: Path) -> list[int]:
    data = _read_json(path) or {}
    value = data.get("eos_token_id")
    ids = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"{path}: eos_token_id must be an integer or a list of them, got {value}")
    return ids


def _chat_template(folder: Path, config: Mapping[str, Any]) -> tuple[str | None, Path]:
    """The template and the file it came from: ``chat_template.jinja``, else tokenizer_config."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return _read_text(jinja_file), jinja_file
    config_file = folder / "tokenizer_config.json"
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template, config_file
    if isinstance(template, list) and template and all(isinstance(t, Mapping) for t in template):
        named = {t.get("name"): t.get("template") for t in template}
        chosen = named.get("default", template[0].get("template"))
        if isinstance(chosen, str):
            return chosen, config_file
    raise ConfigError(
        f"{config_file}: chat_template must be a string or a list of {{name, template}} objects"
    )


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check OpenAI chat messages and flatten text parts into strings (joined by newlines)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise InvalidRequest("messages must be a non-empty list of message objects")
    return [_validate_message(i, message) for i, message in enumerate(messages)]


def _validate_message(index: int, message: Mapping[str, Any]) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise InvalidRequest(f"{where} must be an object with role and content")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
    return {**message, "content": _content_text(where, role, message.get("content"))}


def _content_text(where: str, role: str, content: object) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""  # an assistant turn that only made tool calls
    if isinstance(content, list) and all(_is_text_part(part) for part in content):
        return "\n".join(part["text"] for part in content)
    raise InvalidRequest(
        f"{where}.content must be a string or a list of {{type: text, text}} parts"
    )


def _is_text_part(part: object) -> bool:
    return (
        isinstance(part, Mapping)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    )


class IncrementalDetokenizer:
    """Turns one sequence's output tokens into text deltas that never split a character.

    Keeps a window of tokens from a prefix offset (where the last emitted text started) on.
    Each token decodes the window twice, up to the read offset (text already emitted) and to
    its end, and emits the difference once it ends in complete characters; then the window
    slides to start at the read offset. Decoding with neighbours keeps sentencepiece spaces
    and byte-fallback / byte-level characters right. The window starts on the prompt's last
    tokens so that the first delta keeps its leading space.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_token_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._window = list(prompt_token_ids[-CONTEXT_TOKENS:])
        """Tokens from the prefix offset on."""
        self._read_offset = len(self._window)
        """Window tokens whose text was emitted already."""

    def push(self, token_id: int) -> str:
        """Add one output token; return the text it completes (often ``""`` mid-character)."""
        self._window.append(token_id)
        return self._advance(allow_incomplete=False)

    def flush(self) -> str:
        """At the end of the sequence: whatever is held back, incomplete characters included."""
        return self._advance(allow_incomplete=True)

    def _advance(self, allow_incomplete: bool) -> str:
        window, skip = self._window, self.skip_special_tokens
        before = self.tokenizer.decode(window[: self._read_offset], skip)
        after = self.tokenizer.decode(window, skip)
        if len(after) <= len(before) or (after.endswith(INCOMPLETE) and not allow_incomplete):
            return ""
        del window[: self._read_offset]
        self._read_offset = len(window)
        return after[len(before) :]


@dataclass(frozen=True, slots=True)
class StopCheck:
    """What a ``StopStringMatcher`` lets through for one delta."""

    text: str
    """Text safe to emit now: it cannot be part of a stop string."""
    stop: str | None = None
    """The stop string that matched; ``text`` ends right before it and generation must end."""

    @property
    def stopped(self) -> bool:
        return self.stop is not None


class StopStringMatcher:
    """Cuts a stream of text deltas at the first stop string (OpenAI: the stop is not output).

    Holds back the longest tail that could begin a stop string, so a stop split across
    deltas is caught and no part of it is ever emitted.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stop: str | None = None
        self._held = ""

    def push(self, delta: str) -> StopCheck:
        if self.stop is not None:
            return StopCheck("", self.stop)  # nothing passes after a stop
        text = self._held + delta
        found = [(i, s) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            index, self.stop = min(found)
            self._held = ""
            return StopCheck(text[:index], self.stop)
        keep = max((_overlap(text, s) for s in self.stops), default=0)
        self._held = text[len(text) - keep :]
        return StopCheck(text[: len(text) - keep])

    def flush(self) -> str:
        """The held-back tail, when generation ends without a stop string."""
        held, self._held = self._held, ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for length in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:length]):
            return length
    return 0
