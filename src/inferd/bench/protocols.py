"""Request makers and response checkers for the Open Inference Protocol and the OpenAI API.

Every request is built once, before the run, as complete HTTP/1.1 bytes (``Payload``); during
the run a checker reads only what it must: the status and a marker for KServe, the SSE events
for an OpenAI stream.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import orjson

from inferd.bench.connection import Endpoint, Response
from inferd.bench.spec import BenchSpec
from inferd.errors import ConfigError, InferdError, NotFound

JSON_HEADERS: Final = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Payload:
    """The prebuilt requests of a run (cycled), rows per request, and notes for the report."""

    requests: tuple[bytes, ...]
    rows: int = 1
    streaming: bool = False
    notes: tuple[str, ...] = field(default=())


def check_kserve(response: Response) -> str | None:
    """The error kind of a KServe infer response, or None when it is a good answer."""
    if response.status != 200:
        return f"http {response.status}"
    if b'"outputs"' not in response.body:
        return "bad response"
    return None


def read_bodies(path: str) -> list[dict[str, Any]]:
    """Request bodies from a file: one JSON object, or JSON Lines of objects (cycled)."""
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"bench: --input-file {path}: cannot read it ({e.strerror})") from None
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [_line_body(path, n, line) for n, line in _lines(text)]
    if not isinstance(whole, dict):
        raise ConfigError(f"bench: --input-file {path}: expected a JSON object (a request body)")
    return [whole]


def _lines(text: bytes) -> list[tuple[int, bytes]]:
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _line_body(path: str, number: int, line: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"bench: --input-file {path}, line {number}: not JSON ({e})") from None
    if not isinstance(body, dict):
        raise ConfigError(f"bench: --input-file {path}, line {number}: not a JSON object")
    return body


def fetch_json(url: str, timeout_s: float) -> dict[str, Any]:
    """GET ``url`` and parse its JSON; ``NotFound`` on 404, ``InferdError`` on anything else."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            data = orjson.loads(answer.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        error = NotFound if e.code == 404 else InferdError
        raise error(f"GET {url} answered {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise InferdError(f"cannot reach {url}: {reason}") from None
    except orjson.JSONDecodeError:
        raise InferdError(f"GET {url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise InferdError(f"GET {url} did not answer a JSON object")
    return data


def post_status(endpoint: Endpoint, path: str, body: bytes, timeout_s: float) -> int:
    """POST ``body`` as JSON and read the whole answer; its status (0 when unreachable)."""
    url = f"http://{endpoint.host}:{endpoint.port}{endpoint.prefix}{path}"
    request = urllib.request.Request(url, data=body, headers=JSON_HEADERS, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            answer.read()
            status: int = answer.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def model_path(spec: BenchSpec, suffix: str = "") -> str:
    """``/v2/models/{model}`` (quoted) plus ``suffix``."""
    return f"/v2/models/{quote(spec.model, safe='')}{suffix}"
