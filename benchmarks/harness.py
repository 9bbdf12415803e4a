"""Shared benchmark plumbing: servers pinned to a core, wrk pinned to the other, parsed results.

Every benchmark measures inferd against a reference in the same run, because these machines
are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".bench"
SERVER_CORE = os.environ.get("BENCH_SERVER_CPUS", "1")
"""Where servers run: core 1 by default; ``BENCH_SERVER_CPUS=0,1`` gives them the whole machine
(the load generator stays on core 0), as a user's server would have it."""
CLIENT_CORE = "0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A server process pinned to ``SERVER_CORE``; waits until ``ready_path`` answers 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        ready_path: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        pin = ["taskset", "-c", SERVER_CORE] if shutil.which("taskset") else []
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*pin, *argv], stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment
        )
        self._wait(ready_path)

    def _wait(self, path: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"{self.name} exited:\n{self._log.read().decode()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def inferd_server(paths: Sequence[Path], *args: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "inferd", "serve", *map(str, paths), "--port", str(port),
            "--log-level", "warning", *args]  # fmt: skip
    return Server("inferd", argv, port, "/v2/health/ready")


def move_front_end(server: Server, core: str) -> None:
    """Pin the server's own process (every thread of it) to ``core``; its replicas, forked from
    a fork server started before the move, stay on ``SERVER_CORE``: the layout of a machine that
    gives the HTTP front end a core apart from the model's."""
    for thread in Path(f"/proc/{server.proc.pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), {int(core)})


def textbook_server(model: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.textbook_server:app", "--port",
            str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return Server("textbook", argv, port, "/health", env={"TEXTBOOK_MODEL": model})


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, body: bytes, connections: int, seconds: float, headers: dict[str, str]
) -> WrkResult:
    """POST ``body`` to ``url`` with wrk (one thread, pinned to CLIENT_CORE)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.bin").write_bytes(body)
        hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'local f = io.open("{tmp}/body.bin", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
            + hdrs
        )
        cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}",
               f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out)


def _parse_wrk(out: str) -> WrkResult:
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), total, errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a server's fork server and its replicas)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # exited meanwhile
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def save(name: str, payload: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=lambda o: asdict(o)))
    return path
