"""The OpenAI-compatible API: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

A request becomes one engine sequence per (prompt, choice): ``n`` choices of ``p`` prompts
are ``n * p`` sequences generated concurrently (the prompt's KV is shared through the prefix
cache). Streaming answers are server-sent events ending in ``data: [DONE]``; a client that goes
away aborts its sequences, which frees their KV blocks at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from inferd.errors import InferdError, InvalidRequest
from inferd.llm.sampling_params import SamplingParams
from inferd.replicas.manager import ModelManager, ServedLLM
from inferd.server.errors import as_inferd_error, error_headers
from inferd.server.http import (
    Request,
    Response,
    StreamingResponse,
    json_response,
    watch_disconnect,
)
from inferd.server.openai_protocol import (
    ParamError,
    error_body,
    for_choice,
    parse_chat,
    parse_completion,
    with_max_tokens,
)

if TYPE_CHECKING:  # the tokenizer behind them needs the torch extra; the slim server does not
    from inferd.llm.output import TextDelta, TokenLogprob

_DONE = b"data: [DONE]\n\n"


def list_models(manager: ModelManager) -> Response:
    return json_response(200, {"object": "list", "data": [m.describe() for m in manager.llms]})


def get_model(manager: ModelManager, name: str) -> Response:
    return json_response(200, manager.get_llm(name).describe())


def error_response(error: BaseException) -> Response:
    """An error in OpenAI's shape, with the status and headers inferd gives it elsewhere."""
    error = as_inferd_error(error)
    return json_response(error.status_code, error_body(error), error_headers(error))


# --- one sequence per (prompt, choice) -------------------------------------------------------


@dataclass(slots=True)
class Choice:
    """One generated sequence as the API reports it."""

    index: int
    prompt_tokens: int
    text: list[str] = field(default_factory=list)
    num_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, delta: TextDelta) -> None:
        self.text.append(delta.text)
        self.num_tokens += len(delta.token_ids)
        self.logprobs += delta.logprobs or ()
        self.finish_reason = delta.finish_reason


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    prompt_ids: list[int]
    params: SamplingParams


def _jobs(
    llm: ServedLLM, prompts: Sequence[list[int]], params: SamplingParams, max_tokens: int | None
) -> list[_Job]:
    llm.admit(len(prompts) * params.n)
    jobs: list[_Job] = []
    for p, prompt_ids in enumerate(prompts):
        resolved = with_max_tokens(params, llm.check_prompt(prompt_ids, max_tokens))
        jobs += [
            _Job(p * params.n + i, prompt_ids, for_choice(resolved, i)) for i in range(params.n)
        ]
    return jobs


async def _merged(
    llm: ServedLLM, jobs: list[_Job], arrival: float
) -> AsyncIterator[tuple[int, TextDelta]]:
    """Every job's deltas as they come, tagged with the job's choice index."""
    if len(jobs) == 1:  # the common case: no tasks, no queue
        async for delta in llm.generate(jobs[0].prompt_ids, jobs[0].params, arrival):
            yield jobs[0].index, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta] | BaseException | None] = asyncio.Queue(
        maxsize=4 * len(jobs)
    )

    async def run(job: _Job) -> None:
        try:
            async for delta in llm.generate(job.prompt_ids, job.params, arrival):
                await queue.put((job.index, delta))
        except BaseException as e:  # handed to the reader, which raises it
            await queue.put(e)
            return
        await queue.put(None)

    tasks = [asyncio.get_running_loop().create_task(run(job)) for job in jobs]
    try:
        remaining = len(jobs)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- handlers --------------------------------------------------------------------------------


async def completions(request: Request, manager: ModelManager) -> Response | StreamingResponse:
    arrival = time.perf_counter()
    parsed = parse_completion(await _json(request))
    llm = manager.get_llm(parsed.model)
    tokenizer = llm.ready_tokenizer()
    prompts = [p if isinstance(p, list) else tokenizer.encode(p) for p in parsed.prompts]
    jobs = _jobs(llm, prompts, parsed.params, parsed.max_tokens)
    choices = [Choice(job.index, len(job.prompt_ids)) for job in jobs]
    meta = _Meta(f"cmpl-{uuid.uuid4().hex}", int(time.time()), llm.name)
    format_logprobs = (
        _completion_logprobs(tokenizer.decode) if parsed.top_logprobs is not None else None
    )
    if parsed.stream:
        chunks = _stream(
            llm, jobs, choices, arrival, parsed.include_usage,
            lambda index, delta: meta.chunk("text_completion", [{
                "index": index,
                "text": delta.text,
                "logprobs": format_logprobs(delta.logprobs or []) if format_logprobs else None,
                "finish_reason": delta.finish_reason,
            }]),
            lambda: meta.chunk("text_completion", [], _usage(choices, parsed.params.n)),
        )  # fmt: skip
        return StreamingResponse(200, chunks)
    await _generate_all(request, llm, jobs, choices, arrival)
    echoes = [
        tokenizer.decode(prompts[c.index // parsed.params.n]) if parsed.echo else ""
        for c in choices
    ]
    return json_response(200, {
        **meta.head("text_completion"),
        "choices": [{
            "index": c.index,
            "text": echo + "".join(c.text),
            "logprobs": format_logprobs(c.logprobs) if format_logprobs else None,
            "finish_reason": c.finish_reason,
        } for c, echo in zip(choices, echoes, strict=True)],
        "usage": _usage(choices, parsed.params.n),
    })  # fmt: skip


async def chat_completions(request: Request, manager: ModelManager) -> Response | StreamingResponse:
    arrival = time.perf_counter()
    parsed = parse_chat(await _json(request))
    llm = manager.get_llm(parsed.model)
    tokenizer = llm.ready_tokenizer()
    try:
        prompt = tokenizer.encode_chat(parsed.messages, parsed.add_generation_prompt)
    except InvalidRequest as e:  # a message the template or its checks refused
        raise ParamError("messages", e.message) from None
    jobs = _jobs(llm, [prompt], parsed.params, parsed.max_tokens)
    choices = [Choice(job.index, len(job.prompt_ids)) for job in jobs]
    meta = _Meta(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), llm.name)
    format_logprobs = _chat_logprobs(tokenizer.decode) if parsed.logprobs else None
    if parsed.stream:
        started: set[int] = set()

        def chunk(index: int, delta: TextDelta) -> bytes:
            message: dict[str, Any] = {"content": delta.text}
            if index not in started:
                started.add(index)
                message["role"] = "assistant"
            return meta.chunk("chat.completion.chunk", [{
                "index": index,
                "delta": message,
                "logprobs": format_logprobs(delta.logprobs or []) if format_logprobs else None,
                "finish_reason": delta.finish_reason,
            }], include_usage_field=parsed.include_usage)  # fmt: skip

        chunks = _stream(
            llm, jobs, choices, arrival, parsed.include_usage, chunk,
            lambda: meta.chunk(
                "chat.completion.chunk", [], _usage(choices, parsed.params.n), True
            ),
        )  # fmt: skip
        return StreamingResponse(200, chunks)
    await _generate_all(request, llm, jobs, choices, arrival)
    return json_response(200, {
        **meta.head("chat.completion"),
        "choices": [{
            "index": c.index,
            "message": {"role": "assistant", "content": "".join(c.text)},
            "logprobs": format_logprobs(c.logprobs) if format_logprobs else None,
            "finish_reason": c.finish_reason,
        } for c in choices],
        "usage": _usage(choices, parsed.params.n),
    })  # fmt: skip


async def _json(request: Request) -> Any:
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the request body is not valid JSON: {e}") from None


async def _generate_all(
    request: Request, llm: ServedLLM, jobs: list[_Job], choices: list[Choice], arrival: float
) -> None:
    by_index = {c.index: c for c in choices}
    outcome = "client_error"
    try:
        with watch_disconnect(request):
            async for index, delta in _merged(llm, jobs, arrival):
                by_index[index].add(delta)
        outcome = "success"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except InferdError as e:
        outcome = "client_error" if e.status_code < 500 else "model_error"
        raise
    finally:
        _observe(llm, choices, outcome, arrival)


async def _stream(
    llm: ServedLLM,
    jobs: list[_Job],
    choices: list[Choice],
    arrival: float,
    include_usage: bool,
    chunk: Callable[[int, TextDelta], bytes],
    usage_chunk: Callable[[], bytes],
) -> AsyncIterator[bytes]:
    by_index = {c.index: c for c in choices}
    outcome = "cancelled"
    try:
        async for index, delta in _merged(llm, jobs, arrival):
            by_index[index].add(delta)
            yield chunk(index, delta)
        if include_usage:
            yield usage_chunk()
        outcome = "success"
    except InferdError as e:
        # Headers are gone: the error travels as one last event, in OpenAI's shape.
        outcome = "client_error" if e.status_code < 500 else "model_error"
        yield b"data: " + orjson.dumps(error_body(e)) + b"\n\n"
    finally:
        _observe(llm, choices, outcome, arrival)
    yield _DONE


def _observe(llm: ServedLLM, choices: list[Choice], outcome: str, arrival: float) -> None:
    seconds = time.perf_counter() - arrival
    prompt = sum(c.prompt_tokens for c in choices)
    output = sum(c.num_tokens for c in choices)
    llm.metrics.observe_request(outcome, prompt, output, seconds)


def _usage(choices: list[Choice], n: int) -> dict[str, int]:
    # Each prompt counts once, however many choices it has (as OpenAI bills it).
    prompt = sum(c.prompt_tokens for c in choices if c.index % n == 0)
    completion = sum(c.num_tokens for c in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True, slots=True)
class _Meta:
    id: str
    created: int
    model: str

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(
        self,
        kind: str,
        choices: list[dict[str, Any]],
        usage: dict[str, int] | None = None,
        include_usage_field: bool = False,
    ) -> bytes:
        doc = {**self.head(kind), "choices": choices}
        if usage is not None or include_usage_field:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"


# --- logprobs --------------------------------------------------------------------------------

Decode = Callable[..., str]


def _completion_logprobs(decode: Decode) -> Callable[[list[TokenLogprob]], dict[str, Any]]:
    def format_(logprobs: list[TokenLogprob]) -> dict[str, Any]:
        tokens = [decode([lp.token_id], skip_special_tokens=False) for lp in logprobs]
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [
                {decode([t], skip_special_tokens=False): v for t, v in lp.top} for lp in logprobs
            ],
            "text_offset": offsets,
        }

    return format_


def _chat_logprobs(decode: Decode) -> Callable[[list[TokenLogprob]], dict[str, Any]]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        token = decode([token_id], skip_special_tokens=False)
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    def format_(logprobs: list[TokenLogprob]) -> dict[str, Any]:
        return {
            "content": [
                {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
                for lp in logprobs
            ]
        }

    return format_


__all__ = [
    "chat_completions",
    "completions",
    "error_response",
    "get_model",
    "list_models",
]
