"""``inferd stream`` as a user runs it: a real process, JSON Lines in, answers out."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.server import free_port

from inferd.cli import main

INFERD = [sys.executable, "-m", "inferd", "stream"]


def echo_line(value: float, request_id: str) -> str:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [value] * 16}
    return json.dumps({"id": request_id, "inputs": [tensor]})


def test_stdin_gives_one_answer_line_per_input_line(demo_repo: Path, tmp_path: Path) -> None:
    lines = [echo_line(i, f"r{i}") for i in range(200)] + ["", '{"id": "bad", "inputs": []}']
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with source.open("rb") as stdin:
        done = subprocess.run(
            [*INFERD, "echo", str(demo_repo / "echo")],
            stdin=stdin,
            capture_output=True,
            timeout=60,
        )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 201  # the blank line is no input
    by_id = {a["id"]: a for a in answers}
    assert all(by_id[f"r{i}"]["outputs"][0]["data"] == [float(i)] * 16 for i in range(200))
    assert by_id["bad"] == {
        "id": "bad",
        "error": "'inputs' must be a non-empty list",
        "status": 400,
    }
    assert done.returncode == 1, done.stderr  # some input failed
    assert b"answered 201 inputs, 1 of them with an error" in done.stderr


def test_follow_answers_lines_appended_to_the_file(demo_repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "growing.jsonl"
    source.write_text(echo_line(1.0, "before") + "\n")
    argv = [*INFERD, "echo", str(demo_repo / "echo"), "--input", str(source), "--follow",
            "--poll-ms", "10"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = LineReader(proc)
        assert lines.next()["id"] == "before"
        with source.open("a") as f:
            f.write(echo_line(2.0, "appended-1") + "\n" + echo_line(3.0, "appended-2")[:20])
        assert lines.next()["id"] == "appended-1"
        with source.open("a") as f:  # the rest of a line written in two goes
            f.write(echo_line(3.0, "appended-2")[20:] + "\n")
        last = lines.next()
        assert last["id"] == "appended-2" and last["outputs"][0]["data"] == [3.0] * 16
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--follow"], "--follow needs --input FILE"),
        (["--group", "g"], "--group needs --redis URL"),
        (["--redis", "redis://h:1", "--input-stream", "a"], "--redis needs --output-stream"),
        (["--redis", "http://x", "--input-stream", "a", "--output-stream", "b", "--group", "g"],
         "--redis 'http://x': expected redis://HOST:PORT"),
        (["--max-in-flight", "0"], "--max-in-flight must be >= 1"),
    ],
)  # fmt: skip
def test_bad_flags_are_named_before_anything_loads(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream", "echo", *flags]) == 2
    assert f"inferd: configuration error: {message}" in capsys.readouterr().err


def test_an_unreachable_redis_is_named(demo_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    flags = ["--input-stream", "a", "--output-stream", "b", "--group", "g"]
    assert main(["stream", "echo", str(demo_repo / "echo"), "--redis", url, *flags]) == 1
    assert f"inferd stream: cannot reach Redis at {url}" in capsys.readouterr().err


def test_help_shows_every_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stream", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for words in ("MODEL", "--input FILE", "--follow", "--redis URL", "--consumer NAME",
                  "--max-in-flight N", "docs/streaming.md"):  # fmt: skip
        assert words in shown


class LineReader:
    """A process's stdout, a line at a time, each waited for at most ``timeout_s``."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._fd = proc.stdout.fileno()
        self._buffer = b""
        self._timeout_s = timeout_s

    def next(self) -> Any:
        deadline = time.monotonic() + self._timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no answer line in {self._timeout_s}s")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise AssertionError(f"inferd stream exited with {self._proc.wait(10)}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)
