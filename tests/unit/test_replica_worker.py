"""A replica process's loop, run on a thread over a socket pair: batches in order, and a batch
cancelled before it started is skipped."""

from __future__ import annotations

import socket
import threading

import numpy as np

from inferd.replicas.protocol import (
    BlockingChannel,
    Cancel,
    Infer,
    Message,
    Result,
    Shutdown,
    encode,
)
from inferd.replicas.worker import _serve


class Recording:
    """A backend that doubles its input and records which batches it computed."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(float(inputs["x"][0, 0]))
        return {"y": inputs["x"] * 2}


def _send(sock: socket.socket, *messages: Message) -> None:
    # One write: the frames arrive together, as they would queue while a batch computes.
    sock.sendall(b"".join(bytes(piece) for m in messages for piece in encode(m)))


def _x(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 1), value, np.float32)}


def test_a_batch_cancelled_before_it_starts_is_skipped() -> None:
    front, replica = socket.socketpair()
    backend = Recording()
    loop = threading.Thread(target=_serve, args=(BlockingChannel(replica), "m", backend))
    loop.start()
    answers = BlockingChannel(front)
    _send(front, Infer(0, _x(1.0)))
    first = answers.receive()
    assert isinstance(first, Result) and first.seq == 0
    # Then, all waiting in the socket together, as a batch sent ahead waits while the one
    # before it computes: a Cancel too late for batch 0, batch 1 and its Cancel, batch 2.
    _send(front, Cancel(0), Infer(1, _x(2.0)), Cancel(1), Infer(2, _x(3.0)), Shutdown())
    loop.join(timeout=10)
    assert not loop.is_alive()
    assert backend.seen == [1.0, 3.0]  # batch 1 skipped
    last = answers.receive()
    assert isinstance(last, Result) and last.seq == 2
    front.close()
    replica.close()
