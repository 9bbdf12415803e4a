"""A minimal HTTP/1.1 keep-alive client connection on asyncio streams.

The request is a prebuilt byte string, and only the status, the framing (Content-Length,
chunked, or read to close) and ``Connection: close`` are parsed: an off-the-shelf Python client
costs several times the CPU per request and would become the bottleneck before the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit


class StaleConnection(ConnectionError):
    """A reused connection was closed by the server before any byte of the response."""


class BodySink(Protocol):
    """Receives a streamed body piece by piece, with the time each piece arrived."""

    def feed(self, data: bytes, at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go: host, port, and the URL's path prefix (no trailing slash)."""

    host: str
    port: int
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse ``http://host[:port][/prefix]``."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/"))

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The full HTTP/1.1 request bytes for ``path`` (below the prefix)."""
        lines = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Response:
    """What the client keeps of a response: status, body (empty when streamed to a sink)."""

    status: int
    body: bytes


@dataclass(slots=True)
class _Head:
    status: int
    length: int | None
    chunked: bool
    close: bool


class Connection(asyncio.Protocol):
    """One kept-alive TCP connection, one request at a time.

    An ``asyncio.Protocol`` rather than streams: the response is parsed straight from
    ``data_received`` (usually one call per answer), which halves the client's CPU per request.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._sink: BodySink | None = None
        self._head: _Head | None = None
        self._chunk_size: int | None = None  # the chunk being read; None between chunks
        self._pieces: list[bytes] = []
        self._reused = False
        self._got_bytes = False
        self.used = False
        self.closed = False
        self.deadline = math.inf

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Connection:
        """Connect (raises ``OSError`` when the server cannot be reached)."""
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(cls, endpoint.host, endpoint.port)
        return connection

    async def exchange(
        self, request: bytes, sink: BodySink | None = None, deadline: float = math.inf
    ) -> Response:
        """Send ``request`` and read the whole response; a ``sink`` gets the body as it comes.

        Raises ``StaleConnection`` when a reused connection turns out closed (safe to send
        again), ``ConnectionError`` when the server closes the connection mid-answer,
        ``ValueError`` on a response that is not HTTP/1.x, ``TimeoutError`` once ``expire``
        is called past ``deadline`` (a ``time.monotonic`` instant).
        """
        self.deadline = deadline
        self._reused, self.used = self.used, True
        if self.closed or self._transport is None:
            raise StaleConnection("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._sink, self._head, self._chunk_size = sink, None, None
        self._pieces, self._got_bytes = [], False
        self._transport.write(request)
        return await self._waiter

    def expire(self, now: float) -> None:
        """Fail the request in flight if its deadline has passed (and close the connection).

        The caller sweeps its connections now and then: a timer per request would cost more
        CPU than the rest of the request together.
        """
        if self._waiter is not None and not self._waiter.done() and now >= self.deadline:
            self._fail(TimeoutError("no complete answer before the deadline"))

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is not a subclass of asyncio.Transport, hence the cast).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._got_bytes = True
        self._buffer += data
        try:
            self._parse()
        except ValueError as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._head is not None and self._head.length is None and not self._head.chunked:
            self._complete()  # the body was "everything until the server closes"
        elif self._reused and not self._got_bytes:
            self._fail(StaleConnection("the server closed the kept-alive connection"))
        else:
            self._fail(ConnectionResetError("the server closed the connection mid-answer"))

    # --- parsing -----------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head = _parse_head(bytes(self._buffer[: end + 4]))
            del self._buffer[: end + 4]
        head = self._head
        if head.chunked:
            self._parse_chunks()
        elif head.length is None:
            self._take(len(self._buffer))
        elif len(self._buffer) >= head.length:
            self._take(head.length)
            self._complete()

    def _parse_chunks(self) -> None:
        while True:
            if self._chunk_size is None:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                self._chunk_size = int(bytes(self._buffer[:end]).split(b";", 1)[0], 16)
                del self._buffer[: end + 2]
            if self._chunk_size == 0:
                self._end_of_chunks()
                return
            if len(self._buffer) < self._chunk_size + 2:
                return
            self._take(self._chunk_size)
            del self._buffer[:2]
            self._chunk_size = None

    def _end_of_chunks(self) -> None:
        # The last chunk is followed by optional trailers, then an empty line.
        if self._buffer.startswith(b"\r\n"):
            del self._buffer[:2]
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self._buffer[: end + 4]
        self._complete()

    def _take(self, size: int) -> None:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._sink is not None:
            self._sink.feed(data, time.monotonic())
        else:
            self._pieces.append(data)

    def _complete(self) -> None:
        assert self._waiter is not None and self._head is not None
        body = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._waiter.set_result(Response(self._head.status, body))
        if self._head.close or self._buffer:
            self.close()  # asked to, or the server sent more than one answer

    def _fail(self, error: Exception) -> None:
        assert self._waiter is not None
        if not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


def _parse_head(head: bytes) -> _Head:
    # Searches on the lowered block, not a split into lines: this runs once per request.
    if not head.startswith(b"HTTP/1.") or len(head) < 12:
        raise ValueError(f"not an HTTP/1.x response: {head[:60]!r}")
    lower = head.lower()
    length_value = _header(lower, b"\r\ncontent-length:")
    connection = _header(lower, b"\r\nconnection:")
    parsed = _Head(
        status=int(head[9:12]),
        length=None if length_value is None else int(length_value),
        chunked=b"chunked" in (_header(lower, b"\r\ntransfer-encoding:") or b""),
        close=b"close" in connection if connection is not None else head[7:8] == b"0",
    )
    if parsed.status in (204, 304) or 100 <= parsed.status < 200:
        parsed.length = 0
    return parsed


def _header(lower_head: bytes, key: bytes) -> bytes | None:
    start = lower_head.find(key)
    if start < 0:
        return None
    start += len(key)
    return lower_head[start : lower_head.find(b"\r\n", start)].strip()
