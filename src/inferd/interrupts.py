"""Signals that stop a long-running command the way Ctrl-C does: by raising in the main thread."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def raising_keyboard_interrupt(signum: int, only_over: Any = None) -> Iterator[None]:
    """While active, ``signum`` raises ``KeyboardInterrupt`` at once in the main thread.

    ``only_over``: take the signal only from this handler (for SIGINT, Python's default one),
    leaving it to whoever installed another. Elsewhere than the main thread nothing changes:
    only the main thread may set handlers, and its owner handles its own signals.
    """
    if threading.current_thread() is not threading.main_thread() or (
        only_over is not None and signal.getsignal(signum) is not only_over
    ):
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        signal.signal(signum, previous)
