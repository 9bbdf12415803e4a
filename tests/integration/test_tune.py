"""``inferd tune`` for real: the demo echo model, real trial servers, real bench load.

One run is interrupted with SIGINT (Ctrl-C) once its first trial is in ``trials.jsonl``: it
must stop that trial's server, write the report of what finished and exit 130. The same
command then resumes (the first trial is not run again) and finishes within its trial budget.
Waits are bounded polls of a condition; nothing asserts timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

TARGET_MS = 200.0  # generous: the machine is shared, and the test checks the tuner, not speed


def tune_command(model: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "inferd", "tune", str(model),
        "--slo-p99-ms", str(TARGET_MS), "--out", str(out),
        "--max-trials", "3", "--confirm", "1", "--confirm-s", "1",
        "--max-replicas", "1", "--max-batch-size", "8",
        "--delays-ms", "0,5", "--max-concurrency", "4",
        "--step-s", "1", "--warmup-s", "0.2", "--price-per-hour", "3.6",
    ]  # fmt: skip


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (the trial servers name their folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_tune_is_interrupted_resumed_and_recommends_a_point_within_target(
    demo_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tune-echo"
    trials = out / "trials.jsonl"
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(
        tune_command(demo_repo / "echo", out),
        stdout=log,
        stderr=log,
        # As from a terminal: a CI job run in the background inherits SIGINT ignored.
        preexec_fn=_sigint_default,
    )
    try:
        wait_for(lambda: trials.exists() and trials.read_text().count("\n") >= 1, 60, "trial 1")
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=30) == 130
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
    first_log = (tmp_path / "first.log").read_text()
    assert "interrupted: run the same command again to resume" in first_log, first_log
    assert (out / "summary.md").is_file()
    assert processes_mentioning(str(out / "trials")) == []  # its trial server was stopped
    done_before = trials.read_text().count("\n")

    second = subprocess.run(
        tune_command(demo_repo / "echo", out), capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "trial 1: instances=1" in second.stderr and "(done before" in second.stderr
    lines = [json.loads(line) for line in trials.read_text().splitlines()]
    assert [line["number"] for line in lines] == list(range(1, len(lines) + 1))
    assert len([line for line in lines if not line["confirms"]]) == 3 and done_before >= 1

    for name in ("summary.md", "summary.html", "throughput_vs_p99.png", "tune.json"):
        assert (out / name).is_file(), name
    assert (out / "throughput_vs_p99.png").read_bytes().startswith(b"\x89PNG")
    recommended = tomllib.loads((out / "recommended.toml").read_text())
    key = (
        f"instances={recommended['instances']},"
        f"max_batch_size={recommended['batching']['max_batch_size']},"
        f"max_queue_delay_ms={recommended['batching']['max_queue_delay_ms']:g}"
    )
    # The recommendation was measured twice (its trial and a confirmation): within target both.
    measured_twice = [line["measurement"] for line in lines if line["key"] == key]
    assert len(measured_twice) == 2
    for measured in measured_twice:
        assert measured["error"] is None and measured["concurrency"] >= 1
        assert measured["p99_ms"] <= TARGET_MS
        load = measured["concurrency"]
        step = next(p for p in measured["points"] if p["concurrency"] == load)
        assert step["p99_ms"] == measured["p99_ms"] and step["num_errors"] == 0
    assert f"recommended: {key}" in second.stdout
    assert key in (out / "summary.md").read_text()
    assert processes_mentioning(str(out / "trials")) == []
