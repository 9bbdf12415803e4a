"""Start a real ``redis-server`` on a free loopback port, in a temporary folder, for a test."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.integration.server import free_port

INSTALL_HINT = (
    "redis-server is not on PATH: run scripts/install, which installs Debian's redis-server "
    "(apt-get install -y --no-install-recommends redis-server)"
)


class RedisServer:
    """A running ``redis-server`` that keeps nothing on disk; ``url`` is where it listens."""

    def __init__(self, folder: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_path = folder / f"redis-{self.port}.log"
        # No snapshots, no append-only file: the test's data lives and dies with the process.
        argv = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                str(folder), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(self._log_path)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def __enter__(self) -> RedisServer:
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> redis.Redis:
        """A synchronous client (bytes in, bytes out)."""
        return redis.Redis.from_url(self.url, socket_timeout=10.0)

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.proc.returncode}:\n{self.log()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        raise TimeoutError(f"redis-server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
