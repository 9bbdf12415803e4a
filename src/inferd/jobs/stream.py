"""Streaming jobs: a model in this process answers JSON Lines from stdin or a followed file.

The model is loaded as the server loads it (``ModelManager``, replicas, dynamic batcher), so
the lines in flight share batches. Lines go in as fast as they come, at most ``max_in_flight``
at once (reading waits at the bound); each answer is written and flushed as soon as it is
computed, so latency is one batch's, not the input's length.

The job is handed the function that answers one message (``Answer``): the server's
(``server/websocket.answer_message``), wired in by the CLI, which is the one layer that may
import both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import orjson

from inferd.errors import (
    ConfigError,
    InferdError,
    ModelNotReady,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from inferd.replicas.manager import ModelManager, ServedModel
from inferd.repository import discover

logger = logging.getLogger("inferd.jobs")

Answer = Callable[[bytes, str], Awaitable[tuple[bytes, InferdError | None]]]
"""(message, id to use if it has none) -> (JSON answer, its error or None)."""
Write = Callable[[bytes], None]

CHUNK_BYTES: Final = 64 * 1024
DRAIN_TIMEOUT_S: Final = 30.0
"""After a stop, how long answers still in flight may take."""
RETRY_DELAYS_S: Final = (0.1, 0.5, 2.0)
"""Waits before trying again a message refused for a passing reason (overloaded, not ready)."""


@dataclass(frozen=True, slots=True)
class LinesConfig:
    """Where the lines come from and how many are computed at once (validated on creation)."""

    input: Path | None = None
    """None: standard input."""
    follow: bool = False
    poll_s: float = 0.05
    max_in_flight: int = 64
    max_line_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.follow and self.input is None:
            raise ConfigError("--follow needs --input FILE: standard input cannot be followed")
        if self.input is not None and not self.input.is_file():
            raise ConfigError(f"--input {self.input}: no such file")
        if not self.poll_s > 0:
            raise ConfigError(f"--poll-ms must be > 0, got {self.poll_s * 1e3:g}")
        check_max_in_flight(self.max_in_flight)


def check_max_in_flight(value: int) -> None:
    """``ConfigError`` naming ``--max-in-flight`` unless ``value`` is at least 1."""
    if value < 1:
        raise ConfigError(f"--max-in-flight must be >= 1, got {value}")


@dataclass(slots=True)
class StreamStats:
    """What a job did: inputs answered, and how many of those answers are errors."""

    answered: int = 0
    errors: int = 0


# --- the model ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_model(paths: Sequence[Path], name: str) -> AsyncIterator[ServedModel]:
    """Load model ``name`` from ``paths`` (and only it) for the length of the block."""
    entries = [e for e in discover(paths) if e.name == name]
    if not entries:
        available = ", ".join(sorted(e.name for e in discover(paths))) or "none"
        raise NotFound(f"no model {name!r} in {', '.join(map(str, paths))}; found: {available}")
    manager = ModelManager(entries)
    try:
        await manager.load()
        model = manager.get(name)
        if not model.ready:
            raise ModelNotReady(model.not_ready_reason())
        yield model
    finally:
        await manager.close()


async def answer_retrying(
    answer: Answer, data: bytes, default_id: str
) -> tuple[bytes, InferdError | None]:
    """``answer``, tried again after a pause while it is refused before being computed (the
    model is overloaded or not ready): never a second computation of a model's work."""
    for delay in RETRY_DELAYS_S:
        body, error = await answer(data, default_id)
        if not isinstance(error, Overloaded | ModelNotReady):
            return body, error
        retry_after = error.retry_after if isinstance(error, Overloaded) else 0.0
        await asyncio.sleep(max(delay, min(retry_after, 5.0)))
    return await answer(data, default_id)


def error_document(request_id: str, error: InferdError) -> bytes:
    """The answer to an input that never reached the model (the server's error answer format)."""
    return orjson.dumps({"id": request_id, "error": error.message, "status": error.status_code})


# --- lines ----------------------------------------------------------------------------------


class LineSplitter:
    """Cuts a byte stream into lines (``\\n``, ``\\r\\n``); a line over ``max_bytes`` is None."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._too_long = False

    def feed(self, chunk: bytes) -> list[bytes | None]:
        """The lines that ``chunk`` completes."""
        lines: list[bytes | None] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._add(chunk[start:end])
            lines.append(self._take())
            start = end + 1
        self._add(chunk[start:])
        return lines

    def finish(self) -> list[bytes | None]:
        """The last line, when the stream does not end with a newline."""
        return [self._take()] if self._size or self._too_long else []

    def _add(self, piece: bytes) -> None:
        if self._too_long or not piece:
            return
        self._size += len(piece)
        if self._size > self._max_bytes:
            self._parts, self._too_long = [], True  # keep no more of it than the bound
        else:
            self._parts.append(piece)

    def _take(self) -> bytes | None:
        line = None if self._too_long else b"".join(self._parts).removesuffix(b"\r")
        self._parts, self._size, self._too_long = [], 0, False
        return line


async def lines_of(
    chunks: AsyncIterator[bytes], max_bytes: int, last: bool
) -> AsyncGenerator[bytes | None, None]:
    """The lines of a stream of chunks; ``last``: an unterminated last line counts too."""
    splitter = LineSplitter(max_bytes)
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
    if last:
        for line in splitter.finish():
            yield line


async def stdin_chunks() -> AsyncGenerator[bytes, None]:
    """Standard input, read by a daemon thread (a blocked read never holds up exit)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue(maxsize=4)

    def read() -> None:
        while True:
            try:
                chunk: bytes | BaseException = os.read(0, CHUNK_BYTES)
            except OSError as e:
                chunk = e
            try:
                # Waits while the queue is full: stdin is read no faster than it is used.
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except RuntimeError:
                return  # the job is over and its loop closed
            if not chunk or isinstance(chunk, BaseException):
                return

    threading.Thread(target=read, name="inferd-stdin", daemon=True).start()
    while True:
        item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        if not item:
            return
        yield item


async def file_chunks(path: Path, follow: bool, poll_s: float) -> AsyncGenerator[bytes, None]:
    """A file's bytes; with ``follow``, then what is appended, like ``tail -F``.

    A file truncated in place is read again from its start; a file replaced (rotated) is
    finished, then the new one at ``path`` is read from its start.
    """
    handle = path.open("rb")
    try:
        while True:
            chunk = handle.read(CHUNK_BYTES)  # a regular file: the read does not wait
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if _truncated(handle):
                handle.seek(0)
            elif _replaced(path, handle):
                handle.close()
                handle = path.open("rb")
            else:
                await asyncio.sleep(poll_s)
    finally:
        handle.close()


def _truncated(handle: BinaryIO) -> bool:
    return os.fstat(handle.fileno()).st_size < handle.tell()


def _replaced(path: Path, handle: BinaryIO) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False  # mid-rotation: keep the old file until the new one appears


# --- the job --------------------------------------------------------------------------------


class LineJob:
    """Answers lines, at most ``max_in_flight`` at once, writing each answer when it is ready."""

    def __init__(
        self, answer: Answer, write: Write, max_in_flight: int, max_line_bytes: int
    ) -> None:
        self._answer = answer
        self._max_line_bytes = max_line_bytes
        self._write = write
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = StreamStats()

    async def consume(self, lines: AsyncIterator[bytes | None]) -> None:
        """Start answering each line as it comes; a line's default id is its number."""
        loop = asyncio.get_running_loop()
        number = 0
        async for line in lines:
            number += 1
            if line is not None and not line.strip():
                continue
            await self._slots.acquire()
            task = loop.create_task(self._one(line, str(number)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the answers in flight; those not done in ``timeout_s`` are dropped."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "dropped %d inputs still in flight after %.0f s", len(pending), timeout_s
                )

    async def _one(self, line: bytes | None, line_id: str) -> None:
        try:
            error: InferdError | None
            if line is None:
                error = too_long = PayloadTooLarge(
                    f"line {line_id} is longer than {self._max_line_bytes} bytes; it was skipped"
                )
                body = error_document(line_id, too_long)
            else:
                body, error = await answer_retrying(self._answer, line, line_id)
            self._write(body)
            self.stats.answered += 1
            self.stats.errors += error is not None
        finally:
            self._slots.release()


async def run_lines(
    config: LinesConfig, answer: Answer, write: Write, stop: asyncio.Event
) -> StreamStats:
    """Answer every line of the configured input until it ends or ``stop`` is set."""
    if config.input is None:
        chunks = stdin_chunks()
    else:
        chunks = file_chunks(config.input, config.follow, config.poll_s)
    job = LineJob(answer, write, config.max_in_flight, config.max_line_bytes)
    reading = asyncio.ensure_future(
        job.consume(lines_of(chunks, config.max_line_bytes, not config.follow))
    )
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    reading.cancel()  # reading no more: what is in flight is still answered
    try:
        await asyncio.wait((reading,), timeout=DRAIN_TIMEOUT_S)
        if not reading.cancelled():
            reading.result()  # raises what reading raised: an unreadable input
    finally:
        await job.drain(DRAIN_TIMEOUT_S)
    return job.stats
