"""The few ASGI pieces inferd needs, written for the hot path: no framework, no per-request
objects beyond one ``Request`` and one ``Response``."""

from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from inferd.errors import InvalidRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
# Responses smaller than this are sent uncompressed even when the client accepts gzip.
_COMPRESS_MIN_BYTES = 1024


@dataclass(slots=True)
class Request:
    """What a handler needs of an HTTP request; the body is read on demand."""

    method: str
    path: str
    headers: dict[bytes, bytes]
    receive: Receive
    max_body_bytes: int
    disconnected: bool = False

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    async def body(self) -> bytes | bytearray:
        """The whole body, decompressed if needed; 413 past the configured limit."""
        raw = await read_body(self.receive, self.headers, self.max_body_bytes)
        encoding = self.headers.get(b"content-encoding")
        if encoding is not None:
            encoding = encoding.strip().lower()  # content codings are case-insensitive
        if encoding is None or encoding == b"identity":
            return raw
        return decompress(raw, encoding, self.max_body_bytes)


@dataclass(slots=True)
class Response:
    """A complete response: status, body chunks and extra headers."""

    status: int
    chunks: list[bytes | memoryview]
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class StreamingResponse:
    """A response whose body is produced as it is sent (server-sent events)."""

    status: int
    body: AsyncIterator[bytes]
    content_type: bytes = b"text/event-stream"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class watch_disconnect:  # lower case: used as a context manager, like contextlib's
    """While active, a client disconnect cancels the current task (its request is dropped).

    The watch starts only once the request has waited ``DISCONNECT_WATCH_DELAY_S``: a task per
    request costs a quarter of the front end's time per request, and a request answered within
    tens of milliseconds gains little from being dropped (at most one batch slot is spent on
    it). Requests are checked for that age together, by one timer per event loop
    (``_Sweeper``): with a timer each the watch cost 5.2 µs per request, with the sweep 3.4
    (in-process, echo model).
    Use it only once the body has been read: it consumes the connection's next ASGI message.
    """

    __slots__ = ("_request", "_sweeper", "_task", "_watcher")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._task: asyncio.Task[object] | None = None
        self._sweeper: _Sweeper | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        assert self._task is not None
        self._sweeper = _sweeper(asyncio.get_running_loop())
        self._sweeper.add(self)

    def __exit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.discard(self)
        if self._watcher is not None:
            self._watcher.cancel()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch from now on (the request has waited long enough)."""
        self._watcher = loop.create_task(self._watch())

    async def _watch(self) -> None:
        message = await self._request.receive()
        if message["type"] == "http.disconnect" and self._task is not None:
            self._request.disconnected = True
            self._task.cancel()


DISCONNECT_WATCH_DELAY_S = 0.05
"""How long a request waits before its client is watched for a disconnect."""
_SWEEP_TICK_S = 0.005
"""The sweep's granularity: a watch starts up to this much after its request came of age."""


class _Sweeper:
    """Starts the watch of every request that has waited ``DISCONNECT_WATCH_DELAY_S``, with one
    timer for all of them: requests are kept in arrival order, so each sweep stops at the
    first one still too young."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: OrderedDict[watch_disconnect, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: watch_disconnect) -> None:
        self._waiting[watch] = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(DISCONNECT_WATCH_DELAY_S, self._sweep)

    def discard(self, watch: watch_disconnect) -> None:
        self._waiting.pop(watch, None)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        while self._waiting:
            watch, since = next(iter(self._waiting.items()))
            if now - since < DISCONNECT_WATCH_DELAY_S:
                # Never sooner than _SWEEP_TICK_S: uvloop's timers count whole milliseconds, and
                # one due in under half of one fires at once, so each arrival made the sweep spin
                # until its request came of age (4,300 sweeps/s under overload).
                wait = max(since + DISCONNECT_WATCH_DELAY_S - now, _SWEEP_TICK_S)
                self._timer = self.loop.call_later(wait, self._sweep)
                return
            del self._waiting[watch]
            watch.start(self.loop)


_current_sweeper: _Sweeper | None = None


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    """The running loop's sweeper (a server has one loop; tests may start several)."""
    global _current_sweeper
    sweeper = _current_sweeper
    if sweeper is None or sweeper.loop is not loop:
        sweeper = _current_sweeper = _Sweeper(loop)
    return sweeper


def json_response(
    status: int, document: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    """A JSON response."""
    return Response(status, [orjson.dumps(document)], JSON, headers or [])


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes | bytearray:
    """Read the request body, refusing more than ``limit`` bytes before reading them.

    A body that arrives in pieces is copied once into a buffer of its declared size (no
    repeated concatenation): large binary tensors cost one copy on the way in.
    """
    size = _declared_length(headers, limit)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        # A chunked body (no Content-Length) may arrive whole in the first message.
        if len(body) > limit:
            raise PayloadTooLarge(
                f"request body of {len(body)} bytes exceeds the limit of {limit} bytes"
            )
        return body  # type: ignore[no-any-return]
    buffer = bytearray(size) if size is not None else bytearray()
    filled = 0
    while True:
        end = filled + len(body)
        if end > (size if size is not None else limit):
            raise PayloadTooLarge(
                f"request body exceeds its Content-Length or the limit of {limit} bytes"
            )
        buffer[filled:end] = body
        filled = end
        if not message.get("more_body", False):
            break
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("client disconnected while sending the body")
        body = message.get("body", b"")
    return buffer if size is None or filled == size else buffer[:filled]


def _declared_length(headers: dict[bytes, bytes], limit: int) -> int | None:
    declared = headers.get(b"content-length")
    if declared is None:
        return None
    try:
        size = int(declared)
    except ValueError:
        raise InvalidRequest(f"invalid Content-Length header: {declared!r}") from None
    if size > limit:
        raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
    return size


def decompress(raw: bytes | bytearray, encoding: bytes, limit: int) -> bytes:
    """Undo gzip or deflate Content-Encoding, stopping at ``limit`` bytes (no zip bombs)."""
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise InvalidRequest(
            f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as e:
        raise InvalidRequest(f"body is not valid {encoding.decode()} data: {e}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    return out


def _compress(body: bytes, accept: bytes | None) -> tuple[bytes, bytes | None]:
    if accept is None or len(body) < _COMPRESS_MIN_BYTES:
        return body, None
    if b"gzip" in accept:
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(body) + c.flush(), b"gzip"
    if b"deflate" in accept:
        return zlib.compress(body), b"deflate"
    return body, None


async def send_response(send: Send, response: Response, accept_encoding: bytes | None) -> None:
    """Send a response in one body message (joining its chunks costs one copy)."""
    chunks = response.chunks
    body = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
    body, encoding = _compress(body, accept_encoding)
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(body)).encode()),
        *response.headers,
    ]
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_streaming(send: Send, request: Request, response: StreamingResponse) -> None:
    """Send each body chunk as it comes; a client that goes away stops the body's producer.

    The body's iterator is closed in every case, so whatever it holds (an LLM's sequences in
    the engine) is released when the client disconnects mid-stream.
    """
    headers = [
        (b"content-type", response.content_type),
        (b"cache-control", b"no-cache"),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    producer = asyncio.current_task()
    assert producer is not None
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request, producer))
    try:
        async for chunk in response.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        close = getattr(response.body, "aclose", None)
        if close is not None:
            await close()


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[object]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            request.disconnected = True
            task.cancel()
            return
