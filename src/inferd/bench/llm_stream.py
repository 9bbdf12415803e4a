"""OpenAI-compatible streaming requests (/v1/completions, /v1/chat/completions) and the
reader of their server-sent events: time to first token, inter-token latency, output tokens."""

from __future__ import annotations

import random
from typing import Any, Final

import orjson

from inferd.bench.connection import Endpoint
from inferd.bench.protocols import JSON_HEADERS, Payload, post_status, read_bodies
from inferd.bench.spec import BenchSpec

NUM_PROMPTS: Final = 32
"""Distinct prompts cycled through, so that a prefix cache does not answer every request."""

_VOCABULARY: Final = (  # noqa: SIM905 - a sentence reads better than 40 quoted words
    "the quick brown fox jumps over a lazy dog while seven wise owls watch from old oak trees "
    "and river stones hum under silver light as travellers count their maps before the long "
    "winter road turns north past quiet villages"
).split()


def openai_payload(spec: BenchSpec) -> Payload:
    """The run's streaming requests, generated or from ``spec.input_file``."""
    endpoint = Endpoint.from_url(spec.url)
    if spec.input_file is not None:
        bodies = [_streaming(spec, body) for body in read_bodies(spec.input_file)]
    else:
        bodies = [_streaming(spec, _generated(spec, seed)) for seed in range(NUM_PROMPTS)]
    notes: tuple[str, ...] = ()
    if spec.ignore_eos and not _accepts_ignore_eos(spec, endpoint, bodies[0]):
        bodies = [{k: v for k, v in b.items() if k != "ignore_eos"} for b in bodies]
        notes = ("the server refused ignore_eos: answers may stop before --max-tokens",)
    requests = tuple(
        endpoint.request("POST", _path(body), orjson.dumps(body), JSON_HEADERS) for body in bodies
    )
    return Payload(requests, streaming=True, notes=notes)


def prompt(num_words: int, seed: int) -> str:
    """A prompt of ``num_words`` words (roughly as many tokens), different for each seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_VOCABULARY) for _ in range(num_words))


def _generated(spec: BenchSpec, seed: int) -> dict[str, Any]:
    text = prompt(spec.prompt_tokens, spec.seed * NUM_PROMPTS + seed)
    if spec.chat:
        return {"messages": [{"role": "user", "content": text}]}
    return {"prompt": text}


def _streaming(spec: BenchSpec, body: dict[str, Any]) -> dict[str, Any]:
    merged = {"max_tokens": spec.max_tokens, **body}
    merged |= {"model": spec.model, "stream": True, "stream_options": {"include_usage": True}}
    if spec.ignore_eos:
        merged["ignore_eos"] = True
    return merged


def _path(body: dict[str, Any]) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


def _accepts_ignore_eos(spec: BenchSpec, endpoint: Endpoint, body: dict[str, Any]) -> bool:
    """False only when the server refuses a request with ignore_eos and takes it without."""
    probe = {**body, "max_tokens": 1}
    if post_status(endpoint, _path(body), orjson.dumps(probe), spec.timeout_s) < 400:
        return True
    del probe["ignore_eos"]
    return post_status(endpoint, _path(body), orjson.dumps(probe), spec.timeout_s) != 200


class SseTracker:
    """Reads one streamed answer as it arrives (a ``BodySink``); times its content events."""

    __slots__ = ("_buffer", "chunk_times", "done", "error", "usage_tokens")

    def __init__(self) -> None:
        self._buffer = b""
        self.chunk_times: list[float] = []
        self.usage_tokens: int | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, data: bytes, at: float) -> None:
        """Take the next piece of the body, received at ``at``."""
        # Normalised over the unread rest, not the piece: a CR LF may straddle two pieces.
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        while (end := self._buffer.find(b"\n\n")) >= 0:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip(), at)

    def _data(self, data: bytes, at: float) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = "bad response"
            return
        if not isinstance(event, dict):
            self.error = "bad response"
        elif "error" in event:
            self.error = "stream error"
        else:
            self._content(event, at)

    def _content(self, event: dict[str, Any], at: float) -> None:
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("text") or delta.get("content"):
                self.chunk_times.append(at)
                return

    def outcome(self) -> str | None:
        """The error kind of the finished stream, or None when it is a good answer."""
        if self.error is not None:
            return self.error
        if not self.done and not self.chunk_times:
            return "bad response"
        return None

    @property
    def output_tokens(self) -> int:
        """Tokens generated: the server's usage count, else one per content chunk."""
        return self.usage_tokens if self.usage_tokens is not None else len(self.chunk_times)
