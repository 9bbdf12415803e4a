"""The OpenAI API's request bodies, validated at the edge, and its error shape.

``parse_completion`` and ``parse_chat`` turn a decoded JSON body into a request the handlers
trust: the prompt (text, token ids or messages) and one ``SamplingParams``. Every field is
checked here or by ``SamplingParams``; a bad one is a 400 naming it (``param`` in the error).
Fields inferd does not implement (``suffix``, ``logit_bias``, tools) are refused rather than
silently ignored; unknown fields are ignored, as OpenAI's own clients send new ones first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from inferd.errors import InferdError, InvalidRequest, NotFound, Overloaded
from inferd.llm.sampling_params import SamplingParams

# Fields passed straight to SamplingParams when present (OpenAI's plus vLLM's extensions).
_SAMPLING_FIELDS = (
    "n", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
    "presence_penalty", "seed", "stop", "stop_token_ids", "ignore_eos", "min_tokens",
    "skip_special_tokens",
)  # fmt: skip
_MAX_TOP_LOGPROBS_COMPLETIONS = 5


class ParamError(InvalidRequest):
    """A 400 about one request field, named in the error's ``param``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """``/v1/completions``: one or several prompts, each text or token ids."""

    model: str
    prompts: list[str | list[int]]
    params: SamplingParams
    max_tokens: int | None
    """None: up to the context's end (resolved per prompt)."""
    stream: bool
    include_usage: bool
    echo: bool
    top_logprobs: int | None
    """``logprobs`` of the request: alternatives per token; None = no logprobs."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """``/v1/chat/completions``: a conversation to continue."""

    model: str
    messages: list[dict[str, Any]]
    params: SamplingParams
    max_tokens: int | None
    stream: bool
    include_usage: bool
    logprobs: bool
    add_generation_prompt: bool


def parse_completion(body: object) -> CompletionRequest:
    """Validate a ``/v1/completions`` body."""
    doc = _object(body)
    _refuse(doc, "suffix", "logit_bias")
    best_of = doc.get("best_of")
    if best_of is not None and best_of != doc.get("n", 1):
        raise ParamError("best_of", "best_of other than n is not supported")
    logprobs = _optional_int(doc, "logprobs", 0, _MAX_TOP_LOGPROBS_COMPLETIONS)
    echo = _bool(doc, "echo", False)
    if echo and logprobs is not None:
        raise ParamError("echo", "echo with logprobs is not supported (no prompt logprobs)")
    stream = _bool(doc, "stream", False)
    max_tokens = _max_tokens(doc, "max_tokens", default=16)
    return CompletionRequest(
        model=_model(doc),
        prompts=_prompts(doc.get("prompt")),
        params=_sampling(doc, max_tokens, logprobs),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=_include_usage(doc, stream),
        echo=echo,
        top_logprobs=logprobs,
    )


def parse_chat(body: object) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body (the messages are checked when rendered)."""
    doc = _object(body)
    _refuse(doc, "logit_bias", "tools", "functions")
    if doc.get("tool_choice") not in (None, "none"):
        raise ParamError("tool_choice", "tool calling is not supported")
    response_format = doc.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise ParamError("response_format", 'only {"type": "text"} is supported')
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ParamError("messages", "messages must be a non-empty array of message objects")
    logprobs = _bool(doc, "logprobs", False)
    top = _optional_int(doc, "top_logprobs", 0, 20)
    if top is not None and not logprobs:
        raise ParamError("top_logprobs", "top_logprobs needs logprobs: true")
    stream = _bool(doc, "stream", False)
    key = "max_completion_tokens" if "max_completion_tokens" in doc else "max_tokens"
    max_tokens = _max_tokens(doc, key, default=None)
    return ChatRequest(
        model=_model(doc),
        messages=messages,
        params=_sampling(doc, max_tokens, (top or 0) if logprobs else None),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=_include_usage(doc, stream),
        logprobs=logprobs,
        add_generation_prompt=_bool(doc, "add_generation_prompt", True),
    )


def with_max_tokens(params: SamplingParams, max_tokens: int) -> SamplingParams:
    """``params`` for one prompt, its max_tokens resolved against the context left."""
    return params if params.max_tokens == max_tokens else replace(params, max_tokens=max_tokens)


def for_choice(params: SamplingParams, index: int) -> SamplingParams:
    """The params of choice ``index`` of n: one sequence each, seeds kept distinct."""
    seed = None if params.seed is None else params.seed + index
    return replace(params, n=1, seed=seed)


# --- errors ----------------------------------------------------------------------------------


def error_body(error: InferdError) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    status = error.status_code
    if isinstance(error, Overloaded):
        kind, code = "server_error", "overloaded"
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    if isinstance(error, NotFound) and "model" in error.message:
        code = "model_not_found"
    if "maximum context length" in error.message:
        code = "context_length_exceeded"
    param = getattr(error, "param", None)
    return {"error": {"message": error.message, "type": kind, "param": param, "code": code}}


# --- fields ----------------------------------------------------------------------------------


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _refuse(doc: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if doc.get(name) not in (None, {}, []):
            raise ParamError(name, f"{name} is not supported by this server")


def _model(doc: Mapping[str, Any]) -> str:
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise ParamError("model", "model must be the name of a served LLM (see /v1/models)")
    return model


def _bool(doc: Mapping[str, Any], name: str, default: bool) -> bool:
    value = doc.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ParamError(name, f"{name} must be true or false, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_int(doc: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not _is_int(value) or not lo <= value <= hi:
        raise ParamError(name, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _max_tokens(doc: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = doc.get(name)
    if value is None:
        return default
    if not _is_int(value) or value < 1:
        raise ParamError(name, f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _include_usage(doc: Mapping[str, Any], stream: bool) -> bool:
    options = doc.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ParamError("stream_options", "stream_options is only allowed with stream: true")
    if not isinstance(options, dict):
        raise ParamError("stream_options", "stream_options must be an object")
    return _bool(options, "include_usage", False)


def _prompts(prompt: object) -> list[str | list[int]]:
    """One prompt or a batch: a string, token ids, or a list of either."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(_is_int(t) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise ParamError(
        "prompt",
        "prompt must be a string, an array of strings, an array of token ids, or an array "
        "of arrays of token ids (none empty)",
    )


def _sampling(
    doc: Mapping[str, Any], max_tokens: int | None, top_logprobs: int | None
) -> SamplingParams:
    kwargs = {name: doc[name] for name in _SAMPLING_FIELDS if doc.get(name) is not None}
    if kwargs.get("stop") is not None and not isinstance(kwargs["stop"], str | list):
        raise ParamError("stop", "stop must be a string or an array of strings")
    if "stop_token_ids" in kwargs and not isinstance(kwargs["stop_token_ids"], list):
        raise ParamError("stop_token_ids", "stop_token_ids must be an array of token ids")
    kwargs["max_tokens"] = max_tokens if max_tokens is not None else 1 << 30
    kwargs["logprobs"] = top_logprobs is not None
    kwargs["top_logprobs"] = top_logprobs or 0
    try:
        return SamplingParams(**kwargs)
    except InvalidRequest as e:
        field = e.message.split(" ", 1)[0]
        if field in kwargs:
            raise ParamError(field, e.message) from None
        raise
    except TypeError as e:  # a value of the wrong type where SamplingParams compares
        raise InvalidRequest(f"invalid sampling parameters: {e}") from None
