"""Run the server: discover models, build the app, hand it to uvicorn (httptools + uvloop)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from inferd.config import ServerConfig
from inferd.gc_tuning import tune_for_serving
from inferd.replicas.manager import ModelManager
from inferd.repository import discover
from inferd.server.app import InferdApp
from inferd.server.protocol import HttpToolsCoalescingProtocol

logger = logging.getLogger("inferd.server")


def build_app(paths: Sequence[Path], config: ServerConfig) -> InferdApp:
    """The ASGI app for the models under ``paths`` (raises ConfigError for bad paths)."""
    entries = discover(paths)
    return InferdApp(ModelManager(entries, config), config)


def serve(paths: Sequence[Path], config: ServerConfig) -> None:
    """Serve until interrupted."""
    app = build_app(paths, config)
    tune_for_serving()
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    logger.info(
        "inferd starting on http://%s:%d with %d model(s)",
        config.host,
        config.port,
        len(app.manager.models) + len(app.manager.llms),
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop=loop,
        # httptools, with each small response written in one system call.
        http=HttpToolsCoalescingProtocol,
        lifespan="on",
        log_level=config.log_level,
        access_log=False,
        server_header=False,
        # inferd reads no client address (no access log), and the middleware that would
        # rewrite it from X-Forwarded-For is one more coroutine per request.
        proxy_headers=False,
        # Compressing each small stream message cost ~100 µs of CPU per message.
        ws_per_message_deflate=False,
    )
