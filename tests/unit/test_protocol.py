"""The HTTP protocol writes a fixed-length response in one call; the rest is as uvicorn has it.

uvicorn's own protocol class runs here, fed bytes directly, over a transport that keeps what
is written: a newer uvicorn that writes differently fails these tests, not production.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from inferd.server.protocol import HeadHoldingTransport, HttpToolsCoalescingProtocol
from inferd.server.testing import MemoryTransport


async def _json_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    body = b'{"echo":' + str(len(message.get("body", b""))).encode() + b"}"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _streaming_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"data: 1\n\n", b"data: 2\n\n"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _connect(app: Any) -> tuple[HttpToolsCoalescingProtocol, MemoryTransport]:
    config = uvicorn.Config(
        app, http=HttpToolsCoalescingProtocol, lifespan="off", log_level="error"
    )
    protocol = HttpToolsCoalescingProtocol(config, ServerState(), {})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _post(body: bytes = b"abc", extra: bytes = b"") -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def test_a_fixed_length_response_is_one_write_of_head_and_body() -> None:
    protocol, transport = await _connect(_json_app)
    protocol.data_received(_post())
    await _settle()
    assert len(transport.calls) == 1
    head, body = transport.calls[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"content-length: 10\r\n" in head
    assert body == b'{"echo":3}'


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    protocol, transport = await _connect(_json_app)
    protocol.data_received(_post(b"a") + _post(b"bb"))
    await _settle()
    protocol.data_received(_post(b"ccc"))
    await _settle()
    assert [call[1] for call in transport.calls] == [b'{"echo":1}', b'{"echo":2}', b'{"echo":3}']


async def test_a_streamed_response_goes_out_chunk_by_chunk() -> None:
    protocol, transport = await _connect(_streaming_app)
    protocol.data_received(_post())
    await _settle()
    assert b"transfer-encoding: chunked" in transport.calls[0][0]
    assert len(transport.calls) == 4  # head, two events, the last chunk: nothing held back
    assert transport.output().endswith(b"0\r\n\r\n")


async def test_head_request_is_answered_without_waiting_for_a_body() -> None:
    protocol, transport = await _connect(_json_app)
    protocol.data_received(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
    await _settle()
    assert transport.output().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.output().endswith(b"\r\n\r\n")


async def test_100_continue_is_written_before_the_body_arrives() -> None:
    protocol, transport = await _connect(_json_app)
    request = _post(b"abcd", b"Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    protocol.data_received(head + b"\r\n\r\n")
    await _settle()
    assert transport.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.data_received(body)
    await _settle()
    assert transport.calls[-1][1] == b'{"echo":4}'


async def test_an_app_that_fails_after_the_head_still_flushes_and_closes() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("model exploded")

    protocol, transport = await _connect(broken)
    protocol.data_received(_post())
    await _settle()
    assert transport.output().startswith(b"HTTP/1.1 200 OK")  # the head was not lost
    assert transport.closed


@pytest.mark.parametrize(
    "first",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"],
)
def test_only_a_fixed_length_head_is_held(first: bytes) -> None:
    transport = MemoryTransport()
    holding = HeadHoldingTransport(transport, hold=True)
    holding.write(first)
    assert transport.calls == [[first]]
