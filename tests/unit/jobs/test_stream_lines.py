"""Stream jobs in process: cutting lines, following a growing file, answering with a real model."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from inferd.errors import ConfigError, InferdError, NotFound
from inferd.jobs.stream import (
    LinesConfig,
    LineSplitter,
    file_chunks,
    open_model,
    run_lines,
)
from inferd.server.websocket import answer_message


def test_lines_are_cut_across_chunks_and_crlf_is_dropped() -> None:
    splitter = LineSplitter(max_bytes=100)
    assert splitter.feed(b'{"a":') == []
    assert splitter.feed(b"1}\r\n{}\n\n{") == [b'{"a":1}', b"{}", b""]
    assert splitter.feed(b'"b":2}') == []
    assert splitter.finish() == [b'{"b":2}']
    assert splitter.finish() == []


def test_a_line_over_the_bound_comes_out_as_none_and_the_next_one_is_whole() -> None:
    splitter = LineSplitter(max_bytes=8)
    assert splitter.feed(b"12345") == []
    assert splitter.feed(b"6789") == []  # 9 bytes: too long, and not kept
    assert splitter.feed(b"0\nshort\n") == [None, b"short"]
    assert splitter.feed(b"x" * 20) == []
    assert splitter.finish() == [None]


async def next_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(chunks), 10)


async def test_following_a_file_reads_appended_truncated_and_rotated_content(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n")
    chunks = file_chunks(path, follow=True, poll_s=0.01)
    try:
        assert await next_chunk(chunks) == b"a\n"
        with path.open("ab") as f:
            f.write(b"bb\n")
        assert await next_chunk(chunks) == b"bb\n"
        path.write_bytes(b"c\n")  # truncated in place, shorter than what was read
        assert await next_chunk(chunks) == b"c\n"
        path.rename(tmp_path / "in.jsonl.1")  # rotated: the next file starts afresh
        path.write_bytes(b"d\n")
        assert await next_chunk(chunks) == b"d\n"
    finally:
        await chunks.aclose()


async def test_without_follow_a_file_ends(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x\ny\n")
    assert [c async for c in file_chunks(path, follow=False, poll_s=0.01)] == [b"x\ny\n"]


def test_options_are_checked_and_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--follow needs --input"):
        LinesConfig(follow=True)
    with pytest.raises(ConfigError, match=r"--input .*: no such file"):
        LinesConfig(input=tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="--max-in-flight must be >= 1"):
        LinesConfig(max_in_flight=0)
    with pytest.raises(ConfigError, match="--poll-ms must be > 0"):
        LinesConfig(poll_s=0.0)


def echo_line(value: float, request_id: str | None = None) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [value] * 16}
    request: dict[str, object] = {"inputs": [tensor]}
    if request_id is not None:
        request["id"] = request_id
    return json.dumps(request).encode()


async def test_lines_are_answered_by_the_model_with_at_most_max_in_flight_at_once(
    demo_repo: Path, tmp_path: Path
) -> None:
    lines = [echo_line(i, f"r{i}") for i in range(100)]
    lines[10] = b"{broken"
    lines[20] = b""  # blank: skipped, no answer
    lines[30] = echo_line(3.5)  # no id: its line number
    lines[40] = b"x" * 300  # over the line bound
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line: it counts too
    written: list[bytes] = []
    running = peak = 0

    async with open_model([demo_repo / "echo"], "echo") as model:

        async def counted(data: bytes, default_id: str) -> tuple[bytes, InferdError | None]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                reply: tuple[bytes, InferdError | None] = await answer_message(
                    model, data, default_id
                )
                return reply
            finally:
                running -= 1

        config = LinesConfig(path, max_in_flight=3, max_line_bytes=200)
        stats = await run_lines(config, counted, written.append, asyncio.Event())

    got = {doc["id"]: doc for doc in map(json.loads, written)}
    assert len(written) == len(got) == 99 and stats.answered == 99 and stats.errors == 2
    assert peak == 3
    assert "malformed JSON" in got["11"]["error"] and got["11"]["status"] == 400
    assert "longer than 200 bytes" in got["41"]["error"] and got["41"]["status"] == 413
    assert got["31"]["outputs"][0]["data"] == [3.5] * 16
    assert got["r99"]["outputs"][0]["data"] == [99.0] * 16


SLOW_ONE_AT_A_TIME = """\
backend = "python"
entry_point = "model.py:Slow"
isolation = "thread"
[batching]
max_batch_size = 1
max_queue_rows = 1
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 1]
[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 1]
"""


async def test_a_line_refused_by_a_full_queue_is_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import time\n\nclass Slow:\n    def predict(self, inputs):\n"
        "        time.sleep(0.05)\n        return {'y': inputs['x']}\n"
    )
    (folder / "model.toml").write_text(SLOW_ONE_AT_A_TIME)
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({"inputs": [tensor]}) for _ in range(4)) + "\n")
    refusals = 0
    written: list[bytes] = []
    async with open_model([folder], "slow") as model:

        async def counted(data: bytes, default_id: str) -> tuple[bytes, InferdError | None]:
            nonlocal refusals
            reply: tuple[bytes, InferdError | None] = await answer_message(model, data, default_id)
            refusals += reply[1] is not None and reply[1].status_code == 503
            return reply

        # Four at once: one computes, one waits in the queue (1 row), two are refused.
        stats = await run_lines(LinesConfig(path, max_in_flight=4), counted, written.append,
                                asyncio.Event())  # fmt: skip
    assert refusals >= 2
    assert stats.answered == 4 and stats.errors == 0
    assert all(json.loads(w)["outputs"][0]["data"] == [1.0] for w in written)


async def test_a_stop_ends_a_followed_file_after_its_answers(
    demo_repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(echo_line(1.0, "first") + b"\n")
    written: list[bytes] = []
    stop = asyncio.Event()
    async with open_model([demo_repo / "echo"], "echo") as model:
        answer = functools.partial(answer_message, model)
        config = LinesConfig(path, follow=True, poll_s=0.01)
        job = asyncio.create_task(run_lines(config, answer, written.append, stop))
        await _until(lambda: len(written) == 1)
        with path.open("ab") as f:
            f.write(echo_line(2.0, "appended") + b"\n")
        await _until(lambda: len(written) == 2)
        stop.set()
        stats = await asyncio.wait_for(job, 10)
    assert [json.loads(w)["id"] for w in written] == ["first", "appended"]
    assert stats.answered == 2


async def test_an_unknown_model_is_named_with_the_ones_there_are(demo_repo: Path) -> None:
    with pytest.raises(NotFound, match=r"no model 'nope'.*found: echo"):
        async with open_model([demo_repo / "echo"], "nope"):
            pass


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)
