"""A replica in a process of its own, seen from the front end's event loop.

The front end and the process share a socket pair. The front end writes ``Infer`` frames and
reads ``Result``/``Failed`` frames through an ``asyncio.BufferedProtocol``, so that tensors are
read straight into the buffers the arrays will live in. A replica that dies (kill -9, segfault,
out of memory) closes its end of the socket: ``connection_lost`` fires at once and every batch
it held fails with ``ReplicaUnavailable``, which the pool may retry elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from inferd.config import ModelConfig, TensorSpec
from inferd.errors import ConfigError, InferdError, ReplicaUnavailable
from inferd.replicas.protocol import (
    Cancel,
    Failed,
    FrameReader,
    Infer,
    LoadFailed,
    Message,
    Ready,
    Result,
    Shutdown,
    encode,
)
from inferd.replicas.worker import replica_main

Tensors = dict[str, np.ndarray]
T = TypeVar("T")

logger = logging.getLogger("inferd.replicas")

_PRELOAD: list[str] = ["inferd.replicas.worker"]
_forkserver_lock = threading.Lock()


def preload(modules: list[str]) -> None:
    """Modules the fork server imports once, before the first replica starts, so that each
    replica forks with them loaded (torch alone takes seconds to import)."""
    for module in modules:
        if module not in _PRELOAD:
            _PRELOAD.append(module)


def _context() -> multiprocessing.context.ForkServerContext:
    # A fork server: replicas fork from a clean, single-threaded process that has the heavy
    # modules loaded, rather than spawning a fresh interpreter each (seconds per replica), and
    # rather than forking the server itself (threads and an event loop do not survive a fork).
    context = multiprocessing.get_context("forkserver")
    with _forkserver_lock:
        context.set_forkserver_preload(list(_PRELOAD))
    return context


class _Channel(asyncio.BufferedProtocol):
    def __init__(self, replica: ProcessReplica) -> None:
        self._replica = replica
        self._reader = FrameReader(replica._on_message)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._reader.advance(nbytes)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._replica._on_lost()


class ProcessReplica:
    """One copy of a model computing in its own process."""

    def __init__(
        self,
        config: ModelConfig,
        index: int,
        threads: int,
        on_exit: Callable[[ProcessReplica], None] | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self.threads = threads
        self.ready: Ready | None = None
        self.alive = False
        self._on_exit = on_exit
        self._process: multiprocessing.process.BaseProcess | None = None
        self._channel: _Channel | None = None
        self._seq = itertools.count()
        self._pending: dict[int, asyncio.Future[Tensors]] = {}
        self._loaded: asyncio.Future[Ready] | None = None
        self._closing = False

    @property
    def signature(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Inputs and outputs as the loaded model declares them."""
        if self.ready is None:
            return (), ()
        return self.ready.inputs, self.ready.outputs

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self._process.pid if self._process else None

    async def start(self, timeout: float = 300.0) -> Ready:
        """Spawn the process and wait until its model is loaded; ``ConfigError`` if it fails."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        self._loaded = loop.create_future()
        process = _context().Process(
            target=replica_main,
            args=(child, self.config, self.threads),
            name=f"inferd-{self.config.name}-{self.index}",
            daemon=True,
        )
        # Thread limits are applied inside the replica (worker._limit_threads): a fork-server
        # child inherits the fork server's environment, not the one around this call.
        await asyncio.to_thread(process.start)
        self._process = process
        child.close()
        parent.setblocking(False)
        _, channel = await loop.connect_accepted_socket(lambda: _Channel(self), parent)
        self._channel = channel
        self.alive = True
        try:
            self.ready = await asyncio.wait_for(self._loaded, timeout)
        except TimeoutError:
            self.kill()
            raise ConfigError(
                f"model {self.config.name!r}: replica did not load in {timeout:.0f}s"
            ) from None
        return self.ready

    async def infer(self, inputs: Tensors) -> Tensors:
        """Compute one batch in the process."""
        channel = self._channel
        if not self.alive or channel is None or channel.transport is None:
            raise ReplicaUnavailable(
                f"replica {self.index} of model {self.config.name!r} is not running"
            )
        seq = next(self._seq)
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            for piece in encode(Infer(seq, inputs)):
                channel.transport.write(piece)
            return await future
        except asyncio.CancelledError:
            # Nobody waits for it (a batch sent ahead whose clients left): if it has not
            # started, the replica skips it.
            if self.alive and channel.transport is not None and not channel.transport.is_closing():
                for piece in encode(Cancel(seq)):
                    channel.transport.write(piece)
            raise
        finally:
            self._pending.pop(seq, None)

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Result):
            _settle(self._pending.get(message.seq), result=message.outputs)
        elif isinstance(message, Failed):
            _settle(self._pending.get(message.seq), error=message.error)
        elif isinstance(message, Ready) and self._loaded is not None:
            _settle(self._loaded, result=message)
        elif isinstance(message, LoadFailed) and self._loaded is not None:
            _settle(self._loaded, error=message.error)

    def _on_lost(self) -> None:
        was_alive, self.alive = self.alive, False
        code = self._exit_code()
        error = ReplicaUnavailable(
            f"replica {self.index} of model {self.config.name!r} died ({code}) while computing"
        )
        for future in list(self._pending.values()):
            _settle(future, error=error)
        if self._loaded is not None and not self._loaded.done():
            message = f"model {self.config.name!r}: replica process exited while loading ({code})"
            _settle(self._loaded, error=ConfigError(message))
        if was_alive and not self._closing:
            logger.error("replica %d of model %r died (%s)", self.index, self.config.name, code)
            if self._on_exit is not None:
                self._on_exit(self)

    def _exit_code(self) -> str:
        process = self._process
        if process is None:
            return "not started"
        process.join(timeout=0.05)
        code = process.exitcode
        if code is None:
            return "connection lost"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    async def close(self, timeout: float = 10.0) -> None:
        """Ask the process to finish, then make sure it has."""
        self._closing = True
        channel, process = self._channel, self._process
        if channel is not None and channel.transport is not None and self.alive:
            for piece in encode(Shutdown()):
                channel.transport.write(piece)
        if process is not None:
            await asyncio.to_thread(process.join, timeout)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, timeout)
        if channel is not None and channel.transport is not None:
            channel.transport.close()
        self.alive = False

    def kill(self) -> None:
        """SIGKILL the process (tests and timeouts)."""
        if self._process is not None and self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGKILL)


def _settle(
    future: asyncio.Future[T] | None,
    result: T | None = None,
    error: InferdError | None = None,
) -> None:
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error
