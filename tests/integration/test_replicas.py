"""Replicas in processes of their own, against a real server and real clients.

One ``inferd serve`` process serves a repository of python models built for faults: replicas
are killed with SIGKILL mid-load, segfault on bad input, die while computing a request that
must not be retried; requests carry deadlines, disconnect while queued, overflow a tiny queue;
a model scales to zero, cold-starts and scales up and down with its load. Models append to
files what they computed, so the tests can prove which requests were never computed. A second
server, with a price per replica-hour, checks cost reporting.

Nothing here uses a sleep as an assertion of timing: waits are bounded polls of a condition.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import ServerProcess

T = TypeVar("T")

# --- the test repository ---------------------------------------------------------------------

WHO_PY = """\
import os
import time

import numpy as np


class Who:
    def predict(self, inputs):
        x = inputs["x"]
        time.sleep(0.002)  # long enough for batches to overlap under load
        return {"y": x * 2, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}
"""

POISON_PY = """\
import ctypes


class Poison:
    def predict(self, inputs):
        x = inputs["x"]
        if (x < 0).any():
            ctypes.string_at(0)  # SIGSEGV: the whole process goes
        return {"y": x}
"""

FRAGILE_PY = """\
import os
import time

import numpy as np


class Fragile:
    def __init__(self, started_file):
        self.started = started_file

    def predict(self, inputs):
        x = inputs["x"]
        with open(self.started, "a") as f:  # which process computes how many rows, at start
            f.write(f"{os.getpid()}:{len(x)}\\n")
        time.sleep(0.5)
        return {"y": x, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}
"""

RECORDER_PY = """\
import time


class Recorder:
    def __init__(self, record_file):
        self.record = record_file

    def predict(self, inputs):
        x = inputs["x"]
        with open(self.record, "a") as f:  # what was computed, as soon as it starts
            f.write(f"{float(x.flat[0]):g}\\n")
        time.sleep(0.3)
        return {"y": x}
"""

ELASTIC_PY = """\
import os
import time

import numpy as np


class Elastic:
    def predict(self, inputs):
        x = inputs["x"]
        time.sleep(0.05)
        return {"y": x, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}
"""

TINY_QUEUE_PY = """\
import time


class TinyQueue:
    def predict(self, inputs):
        time.sleep(0.2)
        return {"y": inputs["x"]}
"""


def _toml(cls: str, width: int, *, pid: bool, extra: str = "") -> str:
    pid_output = '\n[[outputs]]\nname = "pid"\ndatatype = "INT64"\nshape = [-1]\n' if pid else ""
    return (
        textwrap.dedent(
            f"""\
            backend = "python"
            entry_point = "model.py:{cls}"
            """
        )
        + textwrap.dedent(extra)
        + textwrap.dedent(
            f"""
            [[inputs]]
            name = "x"
            datatype = "FP32"
            shape = [-1, {width}]

            [[outputs]]
            name = "y"
            datatype = "FP32"
            shape = [-1, {width}]
            """
        )
        + pid_output
    )


def _model(root: Path, name: str, source: str, toml: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model.py").write_text(source)
    (folder / "model.toml").write_text(toml)
    return folder


def _build_repository(root: Path, files: Path) -> None:
    _model(root, "who", WHO_PY, _toml("Who", 4, pid=True, extra="instances = 2\n"))
    _model(root, "poison", POISON_PY, _toml("Poison", 1, pid=False))
    _model(
        root,
        "fragile",
        FRAGILE_PY,
        _toml(
            "Fragile",
            1,
            pid=True,
            extra=f"""\
            instances = 2
            idempotent = false

            [parameters]
            started_file = {json.dumps(str(files / "fragile.log"))}
            """,
        ),
    )
    _model(
        root,
        "recorder",
        RECORDER_PY,
        _toml(
            "Recorder",
            1,
            pid=False,
            extra=f"""\
            instances = 1

            [batching]
            max_batch_size = 1

            [parameters]
            record_file = {json.dumps(str(files / "recorder.log"))}
            """,
        ),
    )
    _model(
        root,
        "elastic",
        ELASTIC_PY,
        _toml(
            "Elastic",
            1,
            pid=True,
            extra="""\
            [autoscaling]
            min_replicas = 0
            max_replicas = 2
            target_ongoing_requests = 1
            upscale_delay_s = 0
            downscale_delay_s = 1
            scale_to_zero_after_s = 1.5
            """,
        ),
    )
    _model(
        root,
        "tiny_queue",
        TINY_QUEUE_PY,
        _toml(
            "TinyQueue",
            1,
            pid=False,
            extra="""\
            [batching]
            max_batch_size = 1
            max_queue_rows = 4
            """,
        ),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the models write what they computed."""
    return tmp_path_factory.mktemp("replicas-files")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("replicas-repo")
    _build_repository(root, files)
    with ServerProcess([root], log_dir=tmp_path_factory.mktemp("logs")) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


# --- helpers ---------------------------------------------------------------------------------


def request(rows: list[list[float]], **parameters: Any) -> dict[str, Any]:
    """A v2 JSON infer request with one FP32 input ``x``."""
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [v for row in rows for v in row],
            }
        ]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


def outputs(response: httpx.Response) -> dict[str, list[Any]]:
    """Each output's flat data, by name, from a 200 JSON answer."""
    assert response.status_code == 200, (response.status_code, response.text)
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def expect_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """Assert the status and that the JSON ``error`` contains every fragment; return it."""
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error {message!r}"
    return message


def poll(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """``condition()`` once it is truthy; fail naming ``what`` if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(interval)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by name and label set."""
    r = httpx.get(f"{url}/metrics", timeout=10.0)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample's value; None when absent."""
    return scrape(url).get((name, frozenset(labels.items())))


def pid_of(response: httpx.Response) -> int:
    """The pid of the replica that computed a one-row answer."""
    (pid,) = outputs(response)["pid"]
    return int(pid)


def restarts(server: ServerProcess, model: str) -> float:
    """Crash restarts of the model's replicas so far."""
    value = metric(server.url, "inferd_replica_restarts_total", model=model, reason="crash")
    return value or 0.0


def fragile_batches(files: Path) -> list[tuple[int, int]]:
    """(pid, rows) of each batch the fragile model started, in order."""
    path = files / "fragile.log"
    lines = path.read_text().split() if path.exists() else []
    return [(int(pid), int(rows)) for pid, rows in (line.split(":") for line in lines)]


def recorded(files: Path) -> list[str]:
    """The values the recorder model computed, in order."""
    path = files / "recorder.log"
    return path.read_text().split() if path.exists() else []


# --- 1. a replica killed during a load run: retried, restarted --------------------------------


class WhoLoad:
    """Client threads sending ``who`` requests with data unique to (thread, i), checking that
    each answer is their own data x 2; every failure and mix-up is kept."""

    def __init__(self, url: str, threads: int, per_thread: int) -> None:
        self.url, self.threads, self.per_thread = url, threads, per_thread
        self.failures: list[tuple[int, int, str]] = []
        self.mixed_up: list[tuple[int, int, Any]] = []
        self.pids: set[int] = set()
        """Pids that answered until ``freeze_pids()``."""
        self.done = 0
        self.changed = threading.Condition()
        self._pids_frozen = False

    def run(self, t: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as c:
            for i in range(self.per_thread):
                row = [float(t), float(i), float(t * 1000 + i), 0.25]
                try:
                    r = c.post("/v2/models/who/infer", json=request([row]))
                except httpx.HTTPError as e:
                    self._fail(t, i, repr(e))
                    continue
                if r.status_code != 200:
                    self._fail(t, i, f"{r.status_code} {r.text}")
                    continue
                out = outputs(r)
                with self.changed:
                    if out["y"] != [v * 2 for v in row]:
                        self.mixed_up.append((t, i, out["y"]))
                    if not self._pids_frozen:
                        self.pids.update(out["pid"])
                    self.done += 1
                    self.changed.notify_all()

    def _fail(self, t: int, i: int, what: str) -> None:
        with self.changed:
            self.failures.append((t, i, what))
            self.changed.notify_all()

    def freeze_pids(self) -> set[int]:
        """Stop collecting pids (call holding ``changed``); the pids seen so far."""
        self._pids_frozen = True
        return set(self.pids)


def test_sigkill_during_load_loses_no_request_and_the_replica_comes_back(
    server: ServerProcess, client: httpx.Client
) -> None:
    load = WhoLoad(server.url, threads=8, per_thread=40)
    total = load.threads * load.per_thread
    with ThreadPoolExecutor(load.threads) as pool:
        running = [pool.submit(load.run, t) for t in range(load.threads)]
        with load.changed:  # midway through the run: kill a replica that has answered
            load.changed.wait_for(lambda: load.done >= total // 4 or load.failures, timeout=30)
            assert load.failures == [], f"requests failed before the kill: {load.failures[:5]}"
            assert load.done >= total // 4, "the load run did not get going"
            pids_before = load.freeze_pids()
            victim = max(pids_before)
            os.kill(victim, signal.SIGKILL)
            done_at_kill = load.done
        for future in running:
            future.result(timeout=60)

    assert len(pids_before) == 2, f"both replicas should have answered before: {pids_before}"
    assert done_at_kill < total - 40, "the kill came too late to overlap the load"
    assert load.failures == [], f"{len(load.failures)} requests failed: {load.failures[:5]}"
    assert load.mixed_up == [], f"answers with another request's data: {load.mixed_up[:5]}"
    assert load.done == total

    poll(lambda: restarts(server, "who") >= 1, 20, "a crash restart of who's replica")

    def two_replicas_again() -> set[int] | None:
        answers = [
            client.post("/v2/models/who/infer", json=request([[1, 2, 3, 4]])) for _ in range(8)
        ]
        pids = {pid_of(r) for r in answers}
        fresh = pids - pids_before
        return pids if len(pids) == 2 and fresh and victim not in pids else None

    poll(two_replicas_again, 20, "answers from 2 distinct pids again, one of them new")


# --- 2. a non-idempotent model is not retried --------------------------------------------------


def test_replica_dying_under_a_non_idempotent_request_is_503_and_the_model_recovers(
    server: ServerProcess, client: httpx.Client, files: Path
) -> None:
    before = fragile_batches(files)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/v2/models/fragile/infer", json=request([[7.0]]))
        (pid, _), *_ = poll(
            lambda: fragile_batches(files)[len(before) :], 20, "fragile computing the request"
        )
        os.kill(pid, signal.SIGKILL)
        r = pending.result(timeout=30)
    message = expect_error(r, 503, "not idempotent", "died", "'fragile'")
    assert "SIGKILL" in message, message
    assert fragile_batches(files)[len(before) :] == [(pid, 1)], "the request was computed again"

    def serves() -> bool:
        r = client.post("/v2/models/fragile/infer", json=request([[8.0]]))
        return r.status_code == 200 and outputs(r)["y"] == [8.0]

    poll(serves, 20, "fragile serving again")
    poll(lambda: restarts(server, "fragile") >= 1, 20, "a crash restart of fragile's replica")


def test_batch_mates_of_a_non_idempotent_request_are_not_recomputed_when_its_replica_dies(
    server: ServerProcess, files: Path
) -> None:
    """Two requests batched together on a replica that dies: neither may be computed again."""
    with httpx.Client(base_url=server.url, timeout=30.0) as c:

        def send(value: float) -> httpx.Response:
            return c.post("/v2/models/fragile/infer", json=request([[value]]))

        with ThreadPoolExecutor(4) as pool:

            def both_replicas_serve() -> bool:  # the test before killed one of them
                answers = list(pool.map(send, [1.0, 2.0]))
                return len({pid_of(r) for r in answers if r.status_code == 200}) == 2

            poll(both_replicas_serve, 20, "both fragile replicas answering")
            before = fragile_batches(files)
            # Two requests occupy both replicas (one at a time, or they would share a batch);
            # the next two wait, then ride in one batch.
            first = [pool.submit(send, 21.0)]
            poll(lambda: len(fragile_batches(files)) == len(before) + 1, 10, "21 computing")
            first.append(pool.submit(send, 22.0))
            poll(lambda: len(fragile_batches(files)) == len(before) + 2, 10, "22 computing")
            mates = [pool.submit(send, v) for v in (23.0, 24.0)]
            (pid, rows), *_ = poll(
                lambda: fragile_batches(files)[len(before) + 2 :], 10, "the third batch starting"
            )
            assert rows == 2, "the two waiting requests should share a batch"
            os.kill(pid, signal.SIGKILL)
            answers = [f.result(timeout=30) for f in first + mates]

    assert [r.status_code for r in answers[:2]] == [200, 200], [r.text for r in answers[:2]]
    # The model is not idempotent: the batch that died must not run again, whole or in parts.
    batches = fragile_batches(files)[len(before) :]
    assert len(batches) == 3, f"batches computed (pid, rows): {batches}; expected 3"
    for r in answers[2:]:
        expect_error(r, 503, "not idempotent", "died", "SIGKILL")


# --- 3. a segfault in model code ----------------------------------------------------------------


def test_segfault_is_503_naming_the_signal_and_the_model_comes_back(
    client: httpx.Client,
) -> None:
    r = client.post("/v2/models/poison/infer", json=request([[-1.0]]))
    expect_error(r, 503, "SIGSEGV", "'poison'")
    # Everyone else is served meanwhile, at once.
    with httpx.Client(base_url=client.base_url, timeout=5.0) as quick:
        r = quick.post("/v2/models/who/infer", json=request([[1, 2, 3, 4]]))
        assert outputs(r)["y"] == [2, 4, 6, 8]

    def serves() -> bool:
        r = client.post("/v2/models/poison/infer", json=request([[3.0]]))
        return r.status_code == 200 and outputs(r)["y"] == [3.0]

    poll(serves, 20, "poison serving a good request again")


# --- 4. deadlines ----------------------------------------------------------------------------


def test_past_deadline_is_504_and_never_computed(client: httpx.Client, files: Path) -> None:
    before = recorded(files)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/v2/models/recorder/infer", json=request([[1.0]]))
        poll(lambda: recorded(files)[len(before) :] == ["1"], 10, "recorder computing 1", 0.01)
        # One after the other, each alone in the queue behind the 0.3 s request (a request with
        # others queued ahead may be refused at once by admission control instead).
        r = client.post("/v2/models/recorder/infer", json=request([[2.0]], timeout=50_000))
        expect_error(r, 504, "deadline", "50 ms", "'recorder'")
        r = client.post(
            "/v2/models/recorder/infer",
            json=request([[3.0]]),
            headers={"inferd-timeout-ms": "50"},
        )
        expect_error(r, 504, "deadline", "50 ms", "'recorder'")
        assert outputs(busy.result(timeout=10))["y"] == [1.0]
    # Requests run in arrival order: had 2 or 3 stayed queued, they would run before 4.
    assert outputs(client.post("/v2/models/recorder/infer", json=request([[4.0]])))["y"] == [4.0]
    assert recorded(files)[len(before) :] == ["1", "4"]


# --- 5. a client that disconnects ---------------------------------------------------------------


def test_disconnected_client_request_is_dropped_from_the_queue(
    server: ServerProcess, client: httpx.Client, files: Path
) -> None:
    cancelled = metric(server.url, "inferd_requests_total", model="recorder", outcome="cancelled")
    before = recorded(files)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/v2/models/recorder/infer", json=request([[10.0]]))
        poll(lambda: recorded(files)[len(before) :] == ["10"], 10, "recorder computing 10", 0.01)
        body = json.dumps(request([[11.0]])).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(
                b"POST /v2/models/recorder/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            time.sleep(0.05)  # let the server queue it; then hang up before the answer
        assert outputs(busy.result(timeout=10))["y"] == [10.0]
    poll(
        lambda: (
            metric(server.url, "inferd_requests_total", model="recorder", outcome="cancelled")
            == (cancelled or 0) + 1
        ),
        10,
        "the disconnected request counted as cancelled",
    )
    assert outputs(client.post("/v2/models/recorder/infer", json=request([[12.0]])))["y"] == [12.0]
    assert recorded(files)[len(before) :] == ["10", "12"]


# --- 6. load shedding -------------------------------------------------------------------------


def test_a_full_queue_sheds_with_503_and_retry_after(server: ServerProcess) -> None:
    shed_before = metric(server.url, "inferd_shed_total", model="tiny_queue") or 0
    n = 20
    barrier = threading.Barrier(n)

    def send(v: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=20.0) as c:
            barrier.wait(timeout=10)
            return c.post("/v2/models/tiny_queue/infer", json=request([[float(v)]]))

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(send, v) for v in range(n)]
        answers = [f.result(timeout=30) for f in futures]  # bounded: none may hang

    ok = [r for r in answers if r.status_code == 200]
    shed = [r for r in answers if r.status_code == 503]
    assert len(ok) + len(shed) == n, [(r.status_code, r.text) for r in answers]
    assert len(shed) >= 1 and len(ok) >= 4, (len(ok), len(shed))
    for v, r in enumerate(answers):
        if r.status_code == 200:
            assert outputs(r)["y"] == [float(v)]
    for r in shed:
        assert int(r.headers["retry-after"]) >= 1, r.headers
        expect_error(r, 503, "'tiny_queue'", "limit is 4 rows", "retry later")
    shed_after = metric(server.url, "inferd_shed_total", model="tiny_queue")
    assert shed_after == shed_before + len(shed)


def test_a_deadline_in_a_header_is_shed_before_the_body_is_read(server: ServerProcess) -> None:
    """With the deadline in the ``inferd-timeout-ms`` header, a request the queue already rules
    out is refused on its headers: the 503 comes back although the body is never sent."""
    with httpx.Client(base_url=server.url, timeout=20.0) as c:
        c.post("/v2/models/tiny_queue/infer", json=request([[0.0]]))  # learns: 0.2 s a row
        shed_before = metric(server.url, "inferd_shed_total", model="tiny_queue") or 0
        with ThreadPoolExecutor(4) as pool:  # one computing, three queued: 0.6 s of work
            busy = [
                pool.submit(c.post, "/v2/models/tiny_queue/infer", json=request([[float(v)]]))
                for v in range(1, 5)
            ]
            time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
                raw.sendall(
                    b"POST /v2/models/tiny_queue/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\ninferd-timeout-ms: 100\r\n"
                    b"Content-Length: 100000\r\n\r\n"  # and no body at all
                )
                head = raw.recv(65536).decode()
            answers = [f.result(timeout=30) for f in busy]
    assert head.startswith("HTTP/1.1 503"), head
    assert "retry-after:" in head.lower() and "deadline of 100 ms" in head, head
    assert [r.status_code for r in answers] == [200] * 4
    shed_after = metric(server.url, "inferd_shed_total", model="tiny_queue")
    assert shed_after == shed_before + 1


# --- 7. autoscaling end to end ------------------------------------------------------------------


def test_autoscaling_to_zero_cold_start_up_and_down(server: ServerProcess) -> None:
    def replicas() -> float | None:
        return metric(server.url, "inferd_replicas", model="elastic")

    poll(lambda: replicas() == 0, 15, "elastic scaled to zero when idle")

    # A request to a model at zero waits for a cold start rather than failing.
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        assert outputs(c.post("/v2/models/elastic/infer", json=request([[5.0]])))["y"] == [5.0]
    assert (replicas() or 0) >= 1

    # Load: 12 clients; target 1 ongoing per replica, no upscale delay -> 2 replicas.
    stop = threading.Event()
    errors: list[str] = []
    pids: set[int] = set()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            while not stop.is_set():
                r = c.post("/v2/models/elastic/infer", json=request([[1.0]]))
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    continue
                pids.update(outputs(r)["pid"])

    with ThreadPoolExecutor(12) as pool:
        running = [pool.submit(load) for _ in range(12)]
        try:
            poll(lambda: replicas() == 2, 15, "elastic scaled up to 2 under load")
            poll(lambda: len(pids) >= 2, 15, "answers from both replicas under load")
        finally:
            stop.set()
            for future in running:
                future.result(timeout=30)
    assert errors == []

    poll(lambda: replicas() == 1, 15, "elastic scaled down after the load")
    poll(lambda: replicas() == 0, 15, "elastic scaled to zero again")

    samples = scrape(server.url)
    decisions = {
        (dict(labels)["direction"], dict(labels)["reason"]): value
        for (name, labels), value in samples.items()
        if name == "inferd_autoscaler_decisions_total" and dict(labels)["model"] == "elastic"
    }
    for key in (("up", "cold_start"), ("up", "load"), ("down", "load"), ("down", "idle")):
        assert decisions.get(key, 0) >= 1, f"no {key} decision in {decisions}"

    log = server.log()
    for line in (
        "model 'elastic': scaling up from 0 to 1 replicas (cold_start)",
        "model 'elastic': scaling up from 1 to 2 replicas (over_target)",
        "model 'elastic': scaling down from 2 to 1 replicas (under_target)",
        "model 'elastic': scaling down from 1 to 0 replicas (idle_scale_to_zero)",
    ):
        assert line in log, f"{line!r} not in the server log"


# --- 8. priority and timeout through tritonclient ----------------------------------------------


def test_tritonclient_priority_and_timeout(server: ServerProcess, client: httpx.Client) -> None:
    triton = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = triton_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    for kwargs in ({"priority": 1}, {"timeout": 5_000_000}, {"priority": 1, "timeout": 5_000_000}):
        result = triton.infer("who", [tensor], **kwargs)
        np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
        assert result.as_numpy("pid").shape == (2,)
    triton.close()

    r = client.post("/v2/models/who/infer", json=request([[1, 2, 3, 4]], priority=-1))
    expect_error(r, 400, "priority", "-1")


# --- 9. cost --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def priced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("priced-repo")
    _model(root, "who", WHO_PY, _toml("Who", 4, pid=True, extra="instances = 2\n"))
    config = root.parent / f"{root.name}-inferd.toml"
    config.write_text("[server]\nprice_per_hour = 3.6\n")
    with ServerProcess(
        [root], "--config", str(config), log_dir=tmp_path_factory.mktemp("priced-logs")
    ) as proc:
        yield proc


def test_cost_per_request_and_in_metrics(priced_server: ServerProcess) -> None:
    with httpx.Client(base_url=priced_server.url, timeout=30.0) as c:
        for i in range(5):
            r = c.post(
                "/v2/models/who/infer", json=request([[i, 1, 2, 3], [4, 5, 6, 7]], cost=True)
            )
            assert outputs(r)["y"] == [2 * i, 2, 4, 6, 8, 10, 12, 14]
            parameters = r.json()["parameters"]
            assert parameters["cost"] > 0, parameters
            assert parameters["queue_ms"] >= 0, parameters
            assert parameters["compute_ms"] >= 2, parameters  # the model sleeps 2 ms
            assert parameters["batch_rows"] >= 2, parameters
        # Without the parameter, no cost in the answer.
        r = c.post("/v2/models/who/infer", json=request([[1, 2, 3, 4]]))
        assert "parameters" not in r.json() or "cost" not in r.json()["parameters"]
    samples = scrape(priced_server.url)
    model = frozenset({("model", "who")})
    assert samples[("inferd_cost_total", model)] > 0
    assert samples[("inferd_cost_per_million_inferences", model)] > 0
    assert samples[("inferd_price_per_hour", model)] == 3.6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "systemd-stop"])
def test_a_signal_to_the_process_group_stops_the_server_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C in a terminal (and systemd's stop) signals every process of the group, replicas
    included: the server shuts down in order, and no replica prints a traceback or is
    reported dead or restarted on the way out."""
    root = tmp_path / "models"
    root.mkdir()
    _model(root, "who", WHO_PY, _toml("Who", 4, pid=True, extra="instances = 2\n"))
    server = ServerProcess([root], log_dir=tmp_path, new_session=True)
    with server:
        response = httpx.post(f"{server.url}/v2/models/who/infer", json=request([[1, 2, 3, 4]]))
        assert response.status_code == 200, response.text
        os.killpg(server.proc.pid, signum)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status says it.
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = server.log()
    assert "Traceback" not in log, log
    assert "KeyboardInterrupt" not in log, log
    assert "died" not in log and "restarting" not in log, log
    assert "Application shutdown complete" in log, log
