"""The ASGI application: routing, model loading at startup, and ``serve()``.

Routing is a few string comparisons rather than a framework router: the infer path is the hot
path, and every microsecond per request shows in the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson

from inferd.config import ServerConfig
from inferd.errors import MethodNotAllowed, NotFound
from inferd.replicas.manager import ModelManager
from inferd.server import kserve, openai
from inferd.server.errors import error_response
from inferd.server.http import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamingResponse,
    json_response,
    send_response,
    send_streaming,
)
from inferd.server.openapi import docs_page, openapi_document
from inferd.server.websocket import serve_websocket

logger = logging.getLogger("inferd.server")

Handler = Callable[[], Awaitable[Response]]


class InferdApp:
    """The ASGI callable serving one ``ModelManager``."""

    def __init__(self, manager: ModelManager, config: ServerConfig) -> None:
        self.manager = manager
        self.config = config
        self._loading: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await serve_websocket(self.manager, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        # HEAD is GET without the body (uvicorn leaves the body out): load balancers and
        # uptime checks send it to the health routes.
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        request = Request(method, scope["path"], headers, receive, self.config.max_body_bytes)
        try:
            response = await self._route(request)
            if isinstance(response, StreamingResponse):
                await send_streaming(send, request, response)
                return
        except asyncio.CancelledError:
            if not request.disconnected:
                raise
            # The client left: its request was dropped; there is no one to answer.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return
        except Exception as e:  # every error becomes a JSON answer; the server carries on
            response = _error(request, e)
        await send_response(send, response, headers.get(b"accept-encoding"))

    async def _route(self, request: Request) -> Response | StreamingResponse:
        parts = request.path.strip("/").split("/")
        if parts[0] == "v2":
            return await self._v2(request, parts[1:])
        if parts[0] == "v1":
            return await self._v1(request, parts[1:])
        if request.path == "/metrics":
            _expect(request, "GET")
            return kserve.metrics(self.manager, request)
        if request.path == "/openapi.json":
            _expect(request, "GET")
            return json_response(200, openapi_document())
        if request.path in ("/", "/docs"):
            _expect(request, "GET")
            page = docs_page(self.manager.models, _base_url(request), self.manager.llms)
            return Response(200, [page.encode()], b"text/html; charset=utf-8")
        raise NotFound(f"no route {request.method} {request.path}; see /docs for the API")

    async def _v2(self, request: Request, parts: list[str]) -> Response:
        match parts:
            case [] | [""]:
                _expect(request, "GET")
                return kserve.server_metadata()
            case ["health", "live"]:
                _expect(request, "GET")
                return kserve.server_live()
            case ["health", "ready"]:
                _expect(request, "GET")
                return kserve.server_ready(self.manager)
            case ["repository", "index"]:
                _expect(request, "POST", "GET")
                return kserve.repository_index(self.manager)
            case ["models", "stats"]:
                _expect(request, "GET")
                return kserve.model_stats(self.manager.models)
            case ["models", name, *rest]:
                return await self._model(request, name, rest)
        raise NotFound(f"no route {request.method} {request.path}; see /docs for the API")

    async def _v1(self, request: Request, parts: list[str]) -> Response | StreamingResponse:
        match parts:
            case ["models"]:
                _expect(request, "GET")
                return openai.list_models(self.manager)
            case ["models", name]:
                _expect(request, "GET")
                return openai.get_model(self.manager, name)
            case ["completions"]:
                _expect(request, "POST")
                return await openai.completions(request, self.manager)
            case ["chat", "completions"]:
                _expect(request, "POST")
                return await openai.chat_completions(request, self.manager)
        raise NotFound(f"no route {request.method} {request.path}; see /docs for the API")

    async def _model(self, request: Request, name: str, rest: list[str]) -> Response:
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        model = self.manager.get(name, version)
        match rest:
            case ["infer"]:
                _expect(request, "POST")
                return await kserve.infer(request, model)
            case []:
                _expect(request, "GET")
                return kserve.model_metadata(model)
            case ["ready"]:
                _expect(request, "GET")
                return kserve.model_ready(model)
            case ["config"]:
                _expect(request, "GET")
                return kserve.model_config(model)
            case ["stats"]:
                _expect(request, "GET")
                return kserve.model_stats([model])
        raise NotFound(f"no route {request.method} {request.path}; see /docs for the API")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Load in the background: liveness answers at once, readiness once loaded.
                self._loading = asyncio.get_running_loop().create_task(self._load())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._loading is not None:
                    self._loading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._loading
                await self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load(self) -> None:
        await self.manager.load()
        for model in self.manager.models:
            if model.ready:
                logger.info("model %r ready: %s", model.name, _signature(model.metadata()))
            else:
                logger.error("model %r NOT ready: %s", model.name, model.not_ready_reason())
        for llm in self.manager.llms:
            if llm.ready:
                logger.info(
                    "LLM %r ready: context %d tokens, OpenAI API at /v1/chat/completions",
                    llm.name,
                    llm.max_model_len,
                )
            else:
                logger.error("LLM %r NOT ready: %s", llm.name, llm.not_ready_reason())
        url = f"http://{self.config.host}:{self.config.port}"
        states = [m.ready for m in self.manager.models] + [m.ready for m in self.manager.llms]
        logger.info(
            "inferd ready: %d of %d models at %s (API docs: %s/docs)",
            sum(states),
            len(states),
            url,
            url,
        )


def _error(request: Request, error: Exception) -> Response:
    """The OpenAI error shape under /v1, inferd's own elsewhere."""
    if request.path.startswith("/v1/"):
        return openai.error_response(error)
    return error_response(error)


def _expect(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; use {' or '.join(methods)}"
        )


def _base_url(request: Request) -> str:
    host = request.header(b"host") or "127.0.0.1:8000"
    return f"http://{host}"


def _signature(meta: dict[str, object]) -> str:
    return orjson.dumps({"inputs": meta["inputs"], "outputs": meta["outputs"]}).decode()
