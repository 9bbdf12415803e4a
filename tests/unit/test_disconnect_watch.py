"""Disconnect watching: only requests that waited the delay are watched, by one sweep for all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inferd.server import http
from inferd.server.http import DISCONNECT_WATCH_DELAY_S, Request, watch_disconnect


def _request(receives: list[str]) -> Request:
    async def receive() -> dict[str, Any]:
        receives.append("called")
        return {"type": "http.disconnect"}

    return Request("POST", "/v2/models/m/infer", {}, receive, 1 << 20)


async def test_a_quick_request_is_never_watched() -> None:
    receives: list[str] = []
    for _ in range(100):
        with watch_disconnect(_request(receives)):
            await asyncio.sleep(0)
    await asyncio.sleep(DISCONNECT_WATCH_DELAY_S * 2)
    assert receives == []  # nobody consumed a connection's next message


async def test_a_waiting_request_whose_client_left_is_cancelled() -> None:
    receives: list[str] = []
    request = _request(receives)

    async def handler() -> str:
        with watch_disconnect(request):
            await asyncio.sleep(10)  # queued behind a busy replica
        return "answered"

    task = asyncio.create_task(handler())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert request.disconnected and receives == ["called"]


async def test_requests_are_swept_in_arrival_order_with_one_timer() -> None:
    started: list[int] = []

    class Recording(watch_disconnect):
        __slots__ = ("index",)

        def start(self, loop: asyncio.AbstractEventLoop) -> None:
            started.append(self.index)

    watches = []
    for index in range(3):
        watch = Recording(_request([]))
        watch.index = index
        watches.append(watch)
        watch.__enter__()
        await asyncio.sleep(DISCONNECT_WATCH_DELAY_S / 4)
    watches[1].__exit__(None, None, None)  # answered before its time came
    await asyncio.sleep(DISCONNECT_WATCH_DELAY_S * 2)
    assert started == [0, 2]
    sweeper = http._sweeper(asyncio.get_running_loop())
    assert not sweeper._waiting and sweeper._timer is None
    for watch in (watches[0], watches[2]):
        watch.__exit__(None, None, None)


class _TimerLoop:
    """Just what the sweeper asks of a loop: its time, and timers, recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: object) -> object:
        self.delays.append(delay)
        return object()


def test_the_sweep_never_sets_a_timer_shorter_than_its_tick() -> None:
    # uvloop fires a timer due in under half a millisecond at once: re-arming for the few
    # microseconds until a request comes of age spun the loop, once per arrival.
    loop = _TimerLoop()
    sweeper = http._Sweeper(loop)  # type: ignore[arg-type]
    sweeper.add(watch_disconnect(_request([])))
    loop.now = DISCONNECT_WATCH_DELAY_S - 1e-5
    sweeper._sweep()
    assert loop.delays[-1] >= http._SWEEP_TICK_S
    assert len(sweeper._waiting) == 1  # not yet of age, still waiting
