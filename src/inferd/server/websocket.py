"""The streaming endpoint ``/v2/models/{name}/stream``: one WebSocket per flow of inputs.

Each message is a KServe v2 JSON infer request; its answer (the v2 JSON response, or
``{"id", "error", "status"}``) goes back on the same socket as soon as it is computed, tagged
with the message's ``id``. Messages of every socket go through the model's dynamic batcher, so
they share batches with each other and with HTTP requests.

Backpressure: at most ``max_in_flight`` messages of a socket are unanswered at once. At the
bound the socket is not read (uvicorn then stops reading the TCP connection, and TCP throttles
the client), and sending is awaited, so a client that does not read its answers blocks its own
socket only, and the server holds at most ``max_in_flight`` of its messages.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl

import orjson

from inferd.errors import InferdError, InvalidRequest, ModelNotReady, NotFound
from inferd.replicas.manager import ModelManager, ServedModel
from inferd.server import kserve
from inferd.server.codec import InferRequest, InferResponse, decode_request, encode_response
from inferd.server.errors import error_response
from inferd.server.http import Message, Receive, Request, Scope, Send

logger = logging.getLogger("inferd.server")

DEFAULT_MAX_IN_FLIGHT: Final = 64
MAX_IN_FLIGHT_LIMIT: Final = 1024
"""The most a client may ask for with ``?max_in_flight=N``."""
SEND_TIMEOUT_S: Final = 60.0
"""A socket whose answers cannot be sent for this long is closed: its client stopped reading."""


class Reply(NamedTuple):
    """One message's answer: the JSON document to send back, and its error, if it failed."""

    body: bytes
    error: InferdError | None


async def _never_receive() -> Message:
    raise RuntimeError("a stream message has no HTTP body to receive")


# Messages that come with no HTTP request (stream jobs) read their options from no headers.
_NO_HEADERS: Final = Request("STREAM", "", {}, _never_receive, 0)


async def answer_message(
    model: ServedModel, data: bytes, default_id: str, request: Request | None = None
) -> Reply:
    """Compute one v2 JSON infer request; any failure becomes an error answer, never an exception.

    The answer's ``id`` is the request's, or ``default_id`` when it has none. ``request`` is
    the HTTP request that opened the stream: its ``inferd-timeout-ms`` header sets a default
    deadline for every message.
    """
    request_id = default_id
    try:
        decoded = decode_request(data, None)
        if decoded.id is not None:
            request_id = decoded.id
        _refuse_binary_outputs(decoded)
        options = kserve.request_options(request or _NO_HEADERS, decoded.parameters)
        answer = await model.infer(decoded.inputs, decoded.input_datatypes, options)
        kserve.check_outputs(model, answer.outputs)
        parameters = None
        if decoded.parameters.get("cost"):
            parameters = kserve.cost_parameters(model, answer, decoded)
        response = InferResponse(
            model.name,
            model.version,
            request_id,
            answer.outputs,
            model.output_datatypes,
            parameters,
        )
        chunks, _ = encode_response(response, decoded.outputs, False)
        return Reply(bytes(chunks[0]), None)
    except Exception as e:  # every failure is answered on its own; the stream carries on
        return error_reply(_id_of(data, request_id), e)


def error_reply(request_id: str, error: BaseException) -> Reply:
    """``{"id", "error", "status"}``; an unexpected error is logged and becomes status 500."""
    if not isinstance(error, InferdError):
        logger.exception("unexpected error answering a stream message", exc_info=error)
        error = InferdError(f"internal server error: {type(error).__name__}: {error}")
    body = {"id": request_id, "error": error.message, "status": error.status_code}
    return Reply(orjson.dumps(body), error)


def _refuse_binary_outputs(decoded: InferRequest) -> None:
    wants_binary = decoded.binary_output_default or any(o.binary for o in decoded.outputs or ())
    if wants_binary:
        raise InvalidRequest(
            "binary outputs are not supported on streams: every answer is one JSON message; "
            "drop parameters.binary_data / binary_data_output"
        )


def _id_of(data: bytes, fallback: str) -> str:
    """The request's own id when the message is readable enough to have one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return fallback
    found = doc.get("id") if isinstance(doc, dict) else None
    return found if isinstance(found, str) else fallback


# --- the socket -----------------------------------------------------------------------------


async def serve_websocket(
    manager: ModelManager, scope: Scope, receive: Receive, send: Send
) -> None:
    """Accept a stream socket for one model and answer its messages until it closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        model = _model(manager, scope["path"])
        max_in_flight = _max_in_flight(scope.get("query_string", b""))
    except InferdError as e:
        await _reject(scope, send, e)
        return
    await send({"type": "websocket.accept"})
    headers = dict(scope.get("headers", []))
    request = Request("GET", scope["path"], headers, receive, 0)
    await StreamSocket(model, request, send, max_in_flight).run(receive)


def _model(manager: ModelManager, path: str) -> ServedModel:
    match path.strip("/").split("/"):
        case ["v2", "models", name, "stream"]:
            model = manager.get(name)
        case ["v2", "models", name, "versions", version, "stream"]:
            model = manager.get(name, version)
        case _:
            raise NotFound(f"no WebSocket route {path}; streams are at /v2/models/{{name}}/stream")
    if not model.ready:
        raise ModelNotReady(model.not_ready_reason())
    return model


def _max_in_flight(query_string: bytes) -> int:
    bound = DEFAULT_MAX_IN_FLIGHT
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key != "max_in_flight":
            raise InvalidRequest(f"unknown query parameter {key!r}; the stream takes max_in_flight")
        try:
            bound = int(value)
        except ValueError:
            bound = 0
        if not 1 <= bound <= MAX_IN_FLIGHT_LIMIT:
            raise InvalidRequest(
                f"query parameter max_in_flight must be an integer from 1 to "
                f"{MAX_IN_FLIGHT_LIMIT}, got {value!r}"
            )
    return bound


async def _reject(scope: Scope, send: Send, error: InferdError) -> None:
    """Refuse the handshake with the error's HTTP status and JSON body, where uvicorn can."""
    response = error_response(error)
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    headers = [(b"content-type", response.content_type), *response.headers]
    await send(
        {"type": "websocket.http.response.start", "status": response.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": b"".join(response.chunks)})


class StreamSocket:
    """One accepted socket: reads while fewer than ``max_in_flight`` messages are unanswered."""

    def __init__(
        self, model: ServedModel, request: Request, send: Send, max_in_flight: int
    ) -> None:
        self._model = model
        self._request = request
        self._send = send
        self._slots = asyncio.Semaphore(max_in_flight)
        # One send at a time: ASGI servers need not accept concurrent sends on one socket.
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled = False

    async def run(self, receive: Receive) -> None:
        """Answer messages until the client leaves or stops reading; drop what is in flight."""
        loop = asyncio.get_running_loop()
        sequence = 0
        try:
            while True:
                # Waits while max_in_flight answers are pending: the socket is not read meanwhile.
                await self._slots.acquire()
                if self._stalled:
                    return
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                sequence += 1
                task = loop.create_task(self._answer(message, str(sequence)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            # The client is gone: its queued messages leave the batcher's queue, uncomputed.
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=SEND_TIMEOUT_S)

    async def _answer(self, message: Message, default_id: str) -> None:
        try:
            text: str | None = message.get("text")
            data = text.encode() if text is not None else (message.get("bytes") or b"")
            reply = await answer_message(self._model, data, default_id, self._request)
            out: dict[str, Any] = {"type": "websocket.send"}
            if text is not None:
                out["text"] = reply.body.decode()
            else:
                out["bytes"] = reply.body
            await self._send_reply(out)
        finally:
            self._slots.release()

    async def _send_reply(self, out: dict[str, Any]) -> None:
        if self._stalled:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S), self._send_lock:
                await self._send(out)
        except OSError:
            pass  # the client left; the reader sees the disconnect and stops
        except TimeoutError:
            logger.warning(
                "closing a stream of model %r: its client has not read an answer in %.0f s",
                self._model.name,
                SEND_TIMEOUT_S,
            )
            self._stalled = True
