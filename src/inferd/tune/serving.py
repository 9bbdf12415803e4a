"""One ``inferd serve`` subprocess per trial: started on a free loopback port, stopped for sure.

The server runs in a session of its own, so a Ctrl-C at the terminal reaches only the tuner,
which then stops the server itself (SIGTERM, then SIGKILL to what is left of its process group)
before writing its report. Its memory is read from /proc: the proportional set size (PSS) of
the server, its fork server and its replicas, so pages shared by forked replicas count once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

from inferd.errors import ModelNotReady

POLL_S: Final = 0.1
STOP_TIMEOUT_S: Final = 10.0
LOG_TAIL_CHARS: Final = 2000


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TrialServer:
    """``inferd serve FOLDER`` as a subprocess; ``url`` is its base URL."""

    def __init__(self, folder: Path, log_path: Path, config: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        argv = [sys.executable, "-m", "inferd", "serve", str(folder), "--port", str(self.port)]
        argv += ["--log-level", "warning"]
        if config is not None:
            argv += ["--config", str(config)]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def __enter__(self) -> TrialServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the server is ready; ``ModelNotReady`` when it never gets there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModelNotReady(f"the server exited with {self.proc.returncode}{self._tail()}")
            status, body = _get(f"{self.url}/v2/health/ready")
            if status == 200:
                return
            if status == 503 and "loading" not in body:
                raise ModelNotReady(f"the model did not load: {self._load_error()}{self._tail()}")
            time.sleep(POLL_S)
        raise ModelNotReady(f"the server was not ready after {timeout_s:g} s{self._tail()}")

    def memory_mb(self) -> float:
        """PSS of the server and all its descendants, MiB (RSS where PSS cannot be read)."""
        return sum(_process_memory_kb(pid) for pid in _descendants(self.proc.pid)) / 1024

    def stop(self) -> None:
        """Stop the server: SIGTERM, a bounded wait, then SIGKILL for its whole process group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        # Replicas the server could not stop in time: the group is the one started here.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _load_error(self) -> str:
        _, body = _get(f"{self.url}/v2/repository/index")
        try:
            reasons = [m.get("reason", m.get("state", "?")) for m in json.loads(body)]
        except (ValueError, AttributeError):
            return body or "unknown reason"
        return "; ".join(str(r) for r in reasons)

    def _tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- server log ({self.log_path}) ---\n{text[-LOG_TAIL_CHARS:]}" if text else ""


def _get(url: str) -> tuple[int, str]:
    """Status and body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _process_memory_kb(pid: int) -> float:
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return float(line.split()[1])
        except OSError:
            continue
    return 0.0
