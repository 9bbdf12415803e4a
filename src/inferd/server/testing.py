"""A shipped fake for driving the HTTP protocol without a socket (tests and benchmarks)."""

from __future__ import annotations

import asyncio
from typing import Any


class MemoryTransport(asyncio.Transport):
    """Keeps each write call's data as written (not copied, so memory measurements see only
    the server's own copies); otherwise answers as a connected, open socket would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[Any]] = []
        """One entry per ``write`` or ``writelines`` call: the pieces it wrote."""
        self.closed = False

    def write(self, data: Any) -> None:
        self.calls.append([data])

    def writelines(self, chunks: Any) -> None:
        self.calls.append(list(chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def output(self) -> bytes:
        """Everything written so far, joined."""
        return b"".join(bytes(piece) for call in self.calls for piece in call)
