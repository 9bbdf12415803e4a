"""A signal that stops a command like Ctrl-C: raised at once, handler restored, others' kept."""

from __future__ import annotations

import os
import signal

import pytest

from inferd.interrupts import raising_keyboard_interrupt


def test_the_signal_raises_inside_and_the_old_handler_returns_after() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(KeyboardInterrupt), raising_keyboard_interrupt(signal.SIGUSR1):
        os.kill(os.getpid(), signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_handler_someone_else_installed_is_left_alone() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with raising_keyboard_interrupt(signal.SIGUSR1, only_over=signal.default_int_handler):
            os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
