"""uvicorn's httptools protocol, writing each small response in one system call.

uvicorn writes a response's head and its body separately: two ``send`` calls per response,
two TCP segments, and a second wake-up of the client (strace: 2 ``write`` calls per echo
response). Here the head of a response with a Content-Length is held back and goes out with
the body in one ``writelines`` (a single ``sendmsg``, no copy of the body). Streamed (chunked)
responses and interim ``100 Continue`` lines are written at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_CONTENT_LENGTH = b"\r\ncontent-length:"
_INTERIM = b"HTTP/1.1 1"


class HeadHoldingTransport:
    """A response's view of its connection: holds the head until the body is written.

    Everything but ``write`` and ``close`` goes to the connection's transport unchanged.
    """

    __slots__ = ("_head", "_hold", "_transport")

    def __init__(self, transport: asyncio.Transport, hold: bool) -> None:
        self._transport = transport
        self._head: bytes | None = None
        # A HEAD request's answer has no body write to ride with: nothing is held for it.
        self._hold = hold

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
            return
        if self._hold and isinstance(data, bytes) and _is_fixed_length_head(data):
            self._hold = False  # one head per response
            self._head = data
            return
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.flush()
        self._transport.writelines(chunks)

    def flush(self) -> None:
        """Write a held head now."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _is_fixed_length_head(data: bytes) -> bool:
    return data.endswith(b"\r\n\r\n") and not data.startswith(_INTERIM) and _CONTENT_LENGTH in data


class HttpToolsCoalescingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose responses write head and body together."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # An upgrade (WebSocket) hands the connection over and creates no new cycle.
        if cycle is not None and cycle.transport is self.transport:
            hold = cycle.scope["method"] != "HEAD"
            cycle.transport = HeadHoldingTransport(self.transport, hold)  # type: ignore[assignment]
