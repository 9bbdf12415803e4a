"""Model backends: each turns a model file into ``predict(dict of arrays) -> dict of arrays``."""

from inferd.backends.base import Backend, backend_for_file, create_backend

__all__ = ["Backend", "backend_for_file", "create_backend"]
