"""The single place where inferd's errors become HTTP responses."""

from __future__ import annotations

import logging
import math

from inferd.errors import InferdError, Overloaded
from inferd.server.http import Response, json_response

logger = logging.getLogger("inferd.server")


def as_inferd_error(error: BaseException) -> InferdError:
    """``error`` itself, or a 500 standing for an unexpected one (which is logged here)."""
    if isinstance(error, InferdError):
        return error
    logger.exception("unexpected error", exc_info=error)
    return InferdError(f"internal server error: {type(error).__name__}: {error}")


def error_headers(error: InferdError) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` for overload, nothing otherwise."""
    if isinstance(error, Overloaded):
        return [(b"retry-after", str(max(1, math.ceil(error.retry_after))).encode())]
    return []


def error_response(error: BaseException) -> Response:
    """``{"error": message}`` with the error's status; unexpected errors become 500."""
    error = as_inferd_error(error)
    return json_response(error.status_code, {"error": error.message}, error_headers(error))
