"""Ctrl-C during a load run stops it, even where asyncio would lose the cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from inferd.bench.workers import run_loop


def test_ctrl_c_raises_even_when_the_load_swallows_a_cancellation() -> None:
    async def stubborn() -> str:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        for _ in range(100):
            # Swallowed, as Python 3.11's wait_for does when a cancellation races its future.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        return "finished as if never interrupted"

    # As in a terminal: a CI job run in the background may inherit SIGINT ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_loop(stubborn)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
