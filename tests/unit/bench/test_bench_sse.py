"""The reader of OpenAI server-sent events: content chunks and their times, usage, errors."""

from __future__ import annotations

import orjson

from inferd.bench.llm_stream import SseTracker


def event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def completion(text: str) -> bytes:
    return event({"choices": [{"index": 0, "text": text}]})


def test_content_chunks_are_timed_when_they_arrive() -> None:
    tracker = SseTracker()
    tracker.feed(completion("Hel"), at=1.0)
    tracker.feed(completion("lo") + completion(" you"), at=1.5)  # two events in one piece
    tracker.feed(event({"choices": [], "usage": {"completion_tokens": 9}}), at=1.6)
    tracker.feed(b"data: [DONE]\n\n", at=1.7)
    assert tracker.chunk_times == [1.0, 1.5, 1.5]
    assert tracker.done and tracker.outcome() is None
    assert tracker.output_tokens == 9  # the server's usage wins over the chunk count


def test_events_split_across_pieces_and_crlf_line_ends() -> None:
    tracker = SseTracker()
    raw = completion("a").replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n"
    for i in range(len(raw)):
        tracker.feed(raw[i : i + 1], at=float(i))
    assert len(tracker.chunk_times) == 1
    assert tracker.done
    assert tracker.output_tokens == 1  # no usage: one token per content chunk


def test_chat_deltas_count_only_when_they_carry_content() -> None:
    tracker = SseTracker()
    tracker.feed(event({"choices": [{"delta": {"role": "assistant"}}]}), at=0.1)
    tracker.feed(event({"choices": [{"delta": {"content": "Hi"}}]}), at=0.2)
    tracker.feed(event({"choices": [{"delta": {}, "finish_reason": "length"}]}), at=0.3)
    tracker.feed(b"data: [DONE]\n\n", at=0.4)
    assert tracker.chunk_times == [0.2]
    assert tracker.outcome() is None


def test_an_error_event_fails_the_request() -> None:
    tracker = SseTracker()
    tracker.feed(completion("a") + event({"error": {"message": "engine died"}}), at=0.0)
    assert tracker.outcome() == "stream error"


def test_garbage_and_empty_streams_are_bad_responses() -> None:
    garbage = SseTracker()
    garbage.feed(b"data: {not json\n\n", at=0.0)
    assert garbage.outcome() == "bad response"
    empty = SseTracker()
    empty.feed(b": a comment, no data\n\n", at=0.0)
    assert empty.outcome() == "bad response"
