"""The single place where inferd's errors become HTTP responses."""

from __future__ import annotations

import logging
import math

from inferd.errors import InferdError, Overloaded
from inferd.server.http import Response, json_response

logger = logging.getLogger("inferd.server")


def error_response(error: BaseException) -> Response:
    """``{"error": message}`` with the error's status; unexpected errors become 500."""
    if not isinstance(error, InferdError):
        logger.exception("unexpected error", exc_info=error)
        error = InferdError(f"internal server error: {type(error).__name__}: {error}")
    headers = []
    if isinstance(error, Overloaded):
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after))).encode()))
    return json_response(error.status_code, {"error": error.message}, headers)
