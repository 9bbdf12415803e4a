"""The Redis Streams connector end to end: a real redis-server, real ``inferd stream`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from tests.integration.redis_server import RedisServer

# Echo that takes 10 ms a batch (4 rows at most): slow enough to be killed mid-stream.
SLOW_MODEL = """\
import time

class Slow:
    def predict(self, inputs):
        time.sleep(0.01)
        return {"y": inputs["x"]}
"""
SLOW_TOML = """\
backend = "python"
entry_point = "model.py:Slow"
isolation = "thread"
[batching]
max_batch_size = 4
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 4]
[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 4]
"""
GROUP = "inferd"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as c:
        c.flushdb()
        yield c


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "slow"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(SLOW_MODEL))
    (folder / "model.toml").write_text(SLOW_TOML)
    return folder


class Consumer:
    """An ``inferd stream MODEL --redis ...`` process, consumer ``name`` of the group."""

    def __init__(self, redis_url: str, model: Path, name: str, log_dir: Path, *args: str) -> None:
        self.name = name
        self._log_path = log_dir / f"consumer-{name}-{time.monotonic_ns()}.log"
        self._log = self._log_path.open("wb")
        argv = [sys.executable, "-m", "inferd", "stream", model.name, str(model),
                "--redis", redis_url, "--input-stream", "requests", "--output-stream", "answers",
                "--group", GROUP, "--consumer", name, "--log-level", "info", *args]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self._log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM: it finishes the entries in flight and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def consumers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Consumer]]:
    started: list[Consumer] = []

    def start(model: Path, name: str, *args: str) -> Consumer:
        consumer = Consumer(redis_server.url, model, name, tmp_path, *args)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.kill()


def add_requests(client: redis.Redis, count: int, width: int) -> list[bytes]:
    """``count`` one-row requests (row i is all i) on the input stream; their entry ids."""
    ids = []
    for i in range(count):
        tensor = {"name": "x" if width == 4 else "input", "datatype": "FP32",
                  "shape": [1, width], "data": [i] * width}  # fmt: skip
        ids.append(add(client, {"request": json.dumps({"inputs": [tensor]})}))
    return ids


def answers(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return cast(list[dict[bytes, bytes]], [fields for _, fields in client.xrange("answers") or ()])


def add(client: redis.Redis, fields: dict[str, str | bytes]) -> bytes:
    """XADD to the input stream; the new entry's id."""
    entry_id = client.xadd("requests", fields)  # type: ignore[arg-type]
    assert isinstance(entry_id, bytes)
    return entry_id


def wait_for(condition: Callable[[], bool], what: str, *watched: Consumer) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        for consumer in watched:
            if consumer.proc.poll() is not None:
                raise AssertionError(f"consumer {consumer.name} exited:\n{consumer.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(c.log() for c in watched)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def registered(client: redis.Redis, *names: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            found = {c["name"] for c in client.xinfo_consumers("requests", GROUP)}
        except redis.ResponseError:  # no stream or no group yet
            return False
        return {n.encode() for n in names} <= found

    return check


def check_answers(
    client: redis.Redis, ids: list[bytes], failed: tuple[bytes, ...] = ()
) -> Counter[bytes]:
    """Every entry answered at least once (``ids`` correctly, ``failed`` with an error); the
    count of answers per entry."""
    per_entry: Counter[bytes] = Counter()
    first: dict[bytes, bytes] = {}
    for fields in answers(client):
        entry_id = fields[b"input_id"]
        per_entry[entry_id] += 1
        # A duplicate is the same entry answered again: same input id, same answer.
        assert first.setdefault(entry_id, fields[b"response"]) == fields[b"response"]
    assert set(per_entry) == {*ids, *failed}
    for i, entry_id in enumerate(ids):
        response = json.loads(first[entry_id])
        assert response["id"] == entry_id.decode()
        assert response["outputs"][0]["data"] == [float(i)] * len(response["outputs"][0]["data"])
    return per_entry


def test_two_consumers_share_the_entries_and_answer_each_once(
    client: redis.Redis, consumers: Callable[..., Consumer], demo_repo: Path
) -> None:
    a, b = consumers(demo_repo / "echo", "a"), consumers(demo_repo / "echo", "b")
    wait_for(registered(client, "a", "b"), "both consumers to join the group", a, b)
    ids = add_requests(client, 400, 16)
    bad = add(client, {"request": b"{not json"})
    no_request = add(client, {"payload": b"{}"})
    wait_for(lambda: client.xlen("answers") >= 402, "402 answers", a, b)
    assert a.stop() == 0 and b.stop() == 0

    every = answers(client)
    good = [f for f in every if f[b"input_id"] not in (bad, no_request)]
    per_entry = check_answers(client, ids, failed=(bad, no_request))
    assert per_entry == Counter([*ids, bad, no_request])  # each exactly once
    by_consumer = Counter(f[b"consumer"] for f in good)
    assert by_consumer[b"a"] > 0 and by_consumer[b"b"] > 0, by_consumer
    assert sum(by_consumer.values()) == 400
    errors = {f[b"input_id"]: f[b"error"].decode() for f in every if b"error" in f}
    assert set(errors) == {bad, no_request}
    assert "malformed JSON" in errors[bad]
    assert "no field 'request' (it has payload)" in errors[no_request]
    assert client.xpending("requests", GROUP)["pending"] == 0


def test_a_consumer_killed_mid_stream_answers_its_pending_entries_when_restarted(
    client: redis.Redis, consumers: Callable[..., Consumer], slow_model: Path
) -> None:
    ids = add_requests(client, 300, 4)
    first = consumers(slow_model, "a")
    wait_for(lambda: client.xlen("answers") >= 30, "the first answers", first)
    first.proc.kill()  # SIGKILL: no chance to finish anything
    first.proc.wait(timeout=10)
    assert client.xpending("requests", GROUP)["pending"] > 0  # read, never acknowledged

    again = consumers(slow_model, "a")
    wait_for(lambda: set(ids) <= {f[b"input_id"] for f in answers(client)}, "every answer", again)
    assert again.stop() == 0
    per_entry = check_answers(client, ids)
    assert min(per_entry.values()) >= 1
    assert client.xpending("requests", GROUP)["pending"] == 0
    assert "answering" in again.log() and "left pending by this consumer" in again.log()


def test_entries_of_a_dead_consumer_are_claimed_by_another(
    client: redis.Redis, consumers: Callable[..., Consumer], slow_model: Path
) -> None:
    ids = add_requests(client, 300, 4)
    dead = consumers(slow_model, "dead")
    wait_for(lambda: client.xlen("answers") >= 30, "the first answers", dead)
    dead.proc.kill()
    dead.proc.wait(timeout=10)
    held = client.xpending("requests", GROUP)["pending"]
    assert held > 0

    heir = consumers(slow_model, "heir", "--claim-idle-ms", "300")
    wait_for(lambda: set(ids) <= {f[b"input_id"] for f in answers(client)}, "every answer", heir)
    assert heir.stop() == 0
    check_answers(client, ids)
    assert client.xpending("requests", GROUP)["pending"] == 0
    assert "claimed" in heir.log()
