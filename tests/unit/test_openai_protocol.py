"""OpenAI request bodies: what is accepted, what is refused, and the error shape."""

from __future__ import annotations

from typing import Any

import pytest

from inferd.errors import InvalidRequest, ModelError, NotFound, Overloaded
from inferd.server.openai_protocol import (
    ParamError,
    error_body,
    for_choice,
    parse_chat,
    parse_completion,
    with_max_tokens,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def test_a_completion_body_becomes_prompts_and_params() -> None:
    req = parse_completion(
        {
            "model": "m",
            "prompt": ["a", "b"],
            "max_tokens": 7,
            "temperature": 0.5,
            "top_k": 3,
            "n": 2,
            "stop": "x",
            "logprobs": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "ignored",
            "some_future_field": 1,
        }
    )
    assert req.prompts == ["a", "b"] and req.max_tokens == 7
    assert req.stream and req.include_usage and req.top_logprobs == 2
    p = req.params
    assert (p.temperature, p.top_k, p.n, p.stop) == (0.5, 3, 2, ("x",))
    assert p.logprobs and p.top_logprobs == 2


@pytest.mark.parametrize(
    "prompt", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]], ids=["str", "strs", "ids", "idss"]
)
def test_every_prompt_form_is_accepted(prompt: object) -> None:
    prompts = parse_completion({"model": "m", "prompt": prompt}).prompts
    assert len(prompts) == (2 if prompt in (["a", "b"], [[1, 2], [3]]) else 1)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": [1, "a"]}, "prompt"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "max_tokens": True}, "max_tokens"),
        ({"model": "m", "prompt": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "prompt": "x", "n": 17}, "n"),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
        (
            {"model": "m", "prompt": "x", "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": "m", "prompt": "x", "logit_bias": {"1": 5}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "suffix": "s"}, "suffix"),
        ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        ({"model": "m", "prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"model": "m", "prompt": "x", "stop": 5}, "stop"),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_completion_fields_name_themselves(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ParamError) as info:
        parse_completion(body)
    assert info.value.param == param
    assert error_body(info.value)["error"]["param"] == param


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        parse_completion(["model", "m"])


def test_chat_defaults_and_refusals() -> None:
    req = parse_chat({"model": "m", "messages": MESSAGES})
    assert req.max_tokens is None and not req.logprobs and req.add_generation_prompt
    req = parse_chat({"model": "m", "messages": MESSAGES, "max_completion_tokens": 9})
    assert req.max_tokens == 9
    for extra, param in (
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"messages": []}, "messages"),
    ):
        with pytest.raises(ParamError) as info:
            parse_chat({"model": "m", "messages": MESSAGES, **extra})
        assert info.value.param == param


def test_choices_get_their_own_seed_and_the_context_left() -> None:
    params = parse_completion({"model": "m", "prompt": "x", "n": 3, "seed": 10}).params
    assert [for_choice(params, i).seed for i in range(3)] == [10, 11, 12]
    assert all(for_choice(params, i).n == 1 for i in range(3))
    assert with_max_tokens(params, 5).max_tokens == 5


def test_error_bodies_have_openai_types_and_codes() -> None:
    not_found = error_body(NotFound("the model 'x' does not exist"))["error"]
    assert not_found["type"] == "invalid_request_error" and not_found["code"] == "model_not_found"
    too_long = error_body(InvalidRequest("this model's maximum context length is 8 tokens"))
    assert too_long["error"]["code"] == "context_length_exceeded"
    assert error_body(Overloaded("busy"))["error"]["code"] == "overloaded"
    assert error_body(ModelError("boom"))["error"]["type"] == "server_error"
