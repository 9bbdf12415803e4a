"""inferd's exception tree, mapped to HTTP statuses in exactly one place (``server/errors``).

::

    InferdError                     500  anything unexpected
    ├── ConfigError                      bad configuration, raised at startup (names file and key)
    ├── InvalidRequest              400  malformed or inconsistent request
    │   └── PayloadTooLarge         413  body over the configured limit
    ├── NotFound                    404  unknown model, version or route
    ├── MethodNotAllowed            405  known route, wrong verb
    ├── ModelNotReady               503  model failed to load or is still loading
    ├── Overloaded                  503  load shed; carries ``retry_after`` seconds
    ├── ReplicaUnavailable          503  the replica computing the request died (not retried)
    ├── RequestTimeout              504  deadline passed before the answer was computed
    └── ModelError                  500  the model itself raised while predicting

Every error is picklable (plain args) so that a worker can send it across a process boundary.
"""

from __future__ import annotations


class InferdError(Exception):
    """Base of every error inferd raises on purpose; ``status_code`` is its HTTP status."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))


class ConfigError(InferdError):
    """A configuration file or option is invalid; the message names the file and the key."""


class InvalidRequest(InferdError):
    """The request is malformed or does not match the model's signature."""

    status_code = 400


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the server's configured limit."""

    status_code = 413


class NotFound(InferdError):
    """An unknown model, model version or route."""

    status_code = 404


class MethodNotAllowed(InferdError):
    """The route exists but not for this HTTP method."""

    status_code = 405


class ModelNotReady(InferdError):
    """The model exists but cannot serve: it failed to load or is still loading."""

    status_code = 503


class Overloaded(InferdError):
    """The server sheds this request; the client should retry after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type, tuple[str, float]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after))


class ReplicaUnavailable(InferdError):
    """The replica computing a batch died; the pool retries idempotent models elsewhere."""

    status_code = 503


class RequestTimeout(InferdError):
    """The request's deadline passed before its answer was computed."""

    status_code = 504


class ModelError(InferdError):
    """The model raised while predicting; the message carries the model's own message."""

    status_code = 500
