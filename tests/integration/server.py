"""Start a real ``inferd serve`` process on a free loopback port for a test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A running server; ``url`` is its base URL, ``log()`` what it printed."""

    def __init__(
        self,
        paths: Sequence[Path],
        *args: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        ready_timeout: float = 60.0,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_dir / f"server-{self.port}.log"
        self._log = self._log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "inferd",
            "serve",
            *map(str, paths),
            "--port",
            str(self.port),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            # Its own process group, as a terminal gives a foreground command: for Ctrl-C tests.
            start_new_session=new_session,
        )

    def wait_ready(self, timeout: float = 60.0, need_ready: bool = True) -> None:
        """Wait for readiness (or, with ``need_ready=False``, for loading to finish)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(f"{self.url}/v2/health/ready", timeout=1.0)
                if r.status_code == 200 or (not need_ready and "loading" not in r.text):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def __enter__(self) -> ServerProcess:
        """Wait until ready (stopping the server if it never gets there)."""
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
