"""``inferd batch`` as a user runs it: real processes, real files, signals, kill -9, a server.

Most jobs run the demo's ``echo`` (its output is its input, so every row can be checked, and it
loads in milliseconds); the estimate runs ``digits_sklearn`` in replica processes, the failing
rows a small model that rejects some rows, the LLM job a tiny random Llama.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.server import ServerProcess

ROWS = 2000
CHUNK = 128


FEATURES = 16


@pytest.fixture(scope="module")
def echo(demo_repo: Path) -> Path:
    return demo_repo / "echo"


@pytest.fixture(scope="module")
def digits(demo_repo: Path) -> Path:
    return demo_repo / "digits_sklearn"


def features() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((ROWS, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same rows (16 numbers, an id) as Parquet, JSON Lines and CSV."""
    folder = tmp_path_factory.mktemp("batch-inputs")
    x = features()
    ids = np.arange(ROWS) * 10
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), FEATURES)
    pq.write_table(pa.table({"id": ids, "input": column}), folder / "in.parquet",
                   row_group_size=300)  # fmt: skip
    with (folder / "in.jsonl").open("wb") as f:
        for i in range(ROWS):
            f.write(orjson.dumps({"id": int(ids[i]), "input": x[i].tolist()}) + b"\n")
    with (folder / "in.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *(f"x{k}" for k in range(FEATURES))])
        writer.writerows([int(ids[i]), *(repr(float(v)) for v in x[i])] for i in range(ROWS))
    return {"parquet": folder / "in.parquet", "jsonl": folder / "in.jsonl",
            "csv": folder / "in.csv"}  # fmt: skip


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "inferd", "batch", *map(str, args), "--no-progress"]


def batch(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=120)


def start(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def chunk_lines(output: Path) -> int:
    manifest = output.with_name(output.name + ".inferd-job") / "manifest.jsonl"
    if not manifest.exists():
        return 0
    return sum('"kind":"chunk"' in line for line in manifest.read_text().splitlines())


def wait_for_chunks(proc: subprocess.Popen[str], output: Path, chunks: int) -> None:
    deadline = time.monotonic() + 90
    while chunk_lines(output) < chunks:
        assert proc.poll() is None, f"the job ended early:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "the job committed no chunk in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(echo: Path, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> Path:  # fmt: skip
    """An uninterrupted run: what every interrupted run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "out.parquet"
    done = batch(echo, inputs["parquet"], "-o", out, "--batch-size", 64, "--chunk-rows", CHUNK)
    assert done.returncode == 0, done.stderr
    return out


def test_every_format_gives_every_row_once_in_order(
    echo: Path, inputs: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    expected_ids = list(range(0, ROWS * 10, 10))
    ids, outputs = read_output(reference)
    assert ids.tolist() == expected_ids and np.array_equal(outputs, features())
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"out.{fmt}"
        done = batch(echo, inputs[fmt], "-o", out, "--batch-size", 64, "--price-per-hour", 3.6)
        assert done.returncode == 0, done.stderr
        assert f"rows         {ROWS:,}, none failed" in done.stdout
        assert "per replica-hour" in done.stdout and "rows/s" in done.stdout
        assert not out.with_name(out.name + ".inferd-job").exists()
        ids, outputs = read_output(out)
        assert ids.tolist() == expected_ids, fmt
        assert np.array_equal(outputs, features()), fmt


def read_output(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The id column and the ``output`` column of an output file."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return table.column("id").to_numpy(), np.array(table.column("output").to_pylist())
    if path.suffix == ".jsonl":
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        outputs = np.array([r["output"] for r in rows], dtype=np.float32)
        return np.array([r["id"] for r in rows]), outputs
    with path.open(newline="") as f:
        cells = list(csv.DictReader(f))
    values = [[float(r[f"output_{k}"]) for k in range(FEATURES)] for r in cells]
    return np.array([int(r["id"]) for r in cells]), np.array(values, dtype=np.float32)


def test_sigterm_stops_after_the_chunk_in_flight_and_the_job_resumes(
    echo: Path, inputs: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = (echo, inputs["parquet"], "-o", out, "--batch-size", 64, "--chunk-rows", CHUNK)
    proc = start(*args, "--max-rows-per-s", 600)
    wait_for_chunks(proc, out, 2)
    proc.send_signal(signal.SIGTERM)  # as a spot machine's reclaim does
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "stopped by SIGTERM" in log and "run the same command again" in log
    assert 2 <= chunk_lines(out) < ROWS // CHUNK and not out.exists()

    refused = batch(*args[:-2], "--chunk-rows", 2 * CHUNK)
    assert refused.returncode == 2
    assert f"chunk rows: {CHUNK} vs {2 * CHUNK}" in refused.stderr and "--restart" in refused.stderr

    resumed = batch(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "rows were committed by earlier runs" in resumed.stdout
    assert out.read_bytes() == reference.read_bytes()


def test_kill_9_loses_no_committed_row_and_the_job_resumes(
    echo: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    args = (echo, inputs["parquet"], "-o", out, "--chunk-rows", CHUNK)  # batch size measured
    proc = start(*args, "--max-rows-per-s", 600)
    wait_for_chunks(proc, out, 3)
    proc.kill()
    proc.communicate(timeout=30)
    assert 3 <= chunk_lines(out) < ROWS // CHUNK, "killed mid-job"
    manifest = (out.with_name(out.name + ".inferd-job") / "manifest.jsonl").read_text()
    chosen = orjson.loads(manifest.splitlines()[1])["rows"]

    resumed = batch(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"batch size   {chosen}," in resumed.stdout  # measured once, then reused
    uninterrupted = tmp_path / "same.parquet"
    again = batch(echo, inputs["parquet"], "-o", uninterrupted, "--batch-size", chosen,
                  "--chunk-rows", CHUNK)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == uninterrupted.read_bytes()


PICKY_MODEL = """
import numpy as np

class Picky:
    def __init__(self, *args, **kwargs):
        pass

    def predict(self, inputs):
        x = inputs["input"]
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return {"total": x.sum(axis=1)}
"""
PICKY_TOML = """
name = "picky"
backend = "python"
entry_point = "model.py:Picky"
isolation = "thread"

[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 4]

[[outputs]]
name = "total"
datatype = "FP32"
shape = [-1]
"""


def test_failing_rows_are_recorded_and_the_job_goes_on(tmp_path: Path) -> None:
    model = tmp_path / "picky"
    model.mkdir()
    (model / "model.py").write_text(PICKY_MODEL)
    (model / "model.toml").write_text(PICKY_TOML)
    rows = [orjson.dumps({"input": [float(i % 16)] * 4}) for i in range(300)]
    rows[7] = orjson.dumps({"input": [1.0] * 3})  # the wrong number of features
    rows[150] = b'{"input": [1, 2'  # not JSON
    rows[200] = orjson.dumps({"input": [1.0, -1.0, 1.0, 1.0]})  # the model rejects it
    rows[299] = orjson.dumps({"pixels": [1.0] * 4})  # no input column
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(rows) + b"\n")
    out = tmp_path / "out.jsonl"
    done = batch(model, source, "-o", out, "--chunk-rows", 64, "--batch-size", 16)
    assert done.returncode == 0, done.stderr
    assert "4 failed" in done.stdout
    failed = (7, 150, 200, 299)
    written = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["row"] for r in written] == [i for i in range(300) if i not in failed]
    assert all(r["total"] == 4 * (r["row"] % 16) for r in written)
    lines = (tmp_path / "out.errors.jsonl").read_bytes().splitlines()
    errors = [orjson.loads(line) for line in lines]
    assert [e["row"] for e in errors] == list(failed)
    assert "shape [3]" in errors[0]["error"] and "not valid JSON" in errors[1]["error"]
    assert "negative values are not allowed" in errors[2]["error"]
    assert "no value" in errors[3]["error"]


def test_estimate_measures_a_sample_and_writes_nothing(digits: Path, tmp_path: Path) -> None:
    """On digits_sklearn: the trials run in replica processes, as the job would."""
    source = tmp_path / "digits.csv"
    pixels = np.random.default_rng(1).integers(0, 17, (ROWS, 64))
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"p{k}" for k in range(64)])
        writer.writerows(pixels.tolist())
    out = tmp_path / "out.parquet"
    done = batch(digits, source, "-o", out, "--estimate", "--price-per-hour", 2.0)
    assert done.returncode == 0, done.stderr
    assert f"rows         about {ROWS:,}" in done.stdout  # CSV rows: counted from its lines
    assert "rows/s (measured on a sample)" in done.stdout and "per replica-hour" in done.stdout
    assert "64 columns (p0, p1, p2, ...)" in done.stdout
    assert list(tmp_path.iterdir()) == [source]


@pytest.fixture()
def server(echo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess([echo], log_dir=tmp_path) as running:
        yield running


def test_url_sends_the_rows_to_a_running_server(
    server: ServerProcess, inputs: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    done = batch("echo", inputs["jsonl"], "-o", out, "--url", server.url, "--batch-size", 64,
                 "--chunk-rows", CHUNK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == reference.read_bytes()


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.integration.llm_checkpoint import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("batch-llm") / "tiny_llama")


def test_an_llm_answers_each_prompt(tiny_llm: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"def f{i}(x):"} for i in range(12)]
    rows[4]["prompt"] = ""
    prompts.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "answers.jsonl"
    done = batch(tiny_llm, prompts, "-o", out, "--max-tokens", 5, "--chunk-rows", 8)
    assert done.returncode == 0, done.stderr
    answers = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [a["id"] for a in answers] == [f"q{i}" for i in range(12) if i != 4]
    assert all(a["completion_tokens"] == 5 and a["finish_reason"] == "length" for a in answers)
    assert all(isinstance(a["text"], str) for a in answers)
    (error,) = [
        orjson.loads(x) for x in (tmp_path / "answers.errors.jsonl").read_bytes().split(b"\n") if x
    ]
    assert error == {"row": 4, "id": "q4", "error": "the prompt is empty"}
