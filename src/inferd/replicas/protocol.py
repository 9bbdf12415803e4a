"""Typed messages between the front end and a replica process, and their wire framing.

A frame is pickle protocol 5 with out-of-band buffers, so that numpy arrays cross the socket as
their raw bytes: the sender hands the arrays' memory to the kernel (no join), and the receiver
reads each buffer straight into a bytearray of its own, on which the arrays are rebuilt without
a further copy. Layout, little-endian::

    u64 meta_length | u32 buffer_count | u64 length of each buffer | meta (pickle) | buffers

Messages are frozen dataclasses; errors cross as inferd's own picklable exceptions.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from inferd.config import TensorSpec
from inferd.errors import InferdError

Tensors = dict[str, np.ndarray]

_HEAD: Final = struct.Struct("<QI")
_LEN: Final = struct.Struct("<Q")
_MAX_BUFFERS: Final = 4096
_DIRECT_BYTES: Final = 64 * 1024
"""Buffers this large are written as their own piece and read straight into their own memory."""
_SCRATCH_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class Infer:
    """Compute one batch."""

    seq: int
    inputs: Tensors


@dataclass(frozen=True, slots=True)
class Cancel:
    """Skip batch ``seq`` if it has not started: nobody waits for it any more."""

    seq: int


@dataclass(frozen=True, slots=True)
class Result:
    """A batch's outputs and how long the model took."""

    seq: int
    outputs: Tensors
    compute_s: float


@dataclass(frozen=True, slots=True)
class Failed:
    """A batch failed; ``error`` is an inferd error (ModelError for model code)."""

    seq: int
    error: InferdError


@dataclass(frozen=True, slots=True)
class Ready:
    """The replica loaded its model; the signature it read from it."""

    pid: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """The replica could not load its model."""

    error: InferdError


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Finish and exit."""


Message = Infer | Cancel | Result | Failed | Ready | LoadFailed | Shutdown


def encode(message: Message) -> list[bytes | memoryview]:
    """The frame as pieces to write in order.

    Small frames are one piece (one write, one system call); a large buffer is its own piece,
    the array's memory itself, so it is never joined or copied on the way out.
    """
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = _HEAD.pack(len(meta), len(views)) + b"".join(_LEN.pack(v.nbytes) for v in views)
    pieces: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = [head, meta]
    for view in views:
        if view.nbytes < _DIRECT_BYTES:
            small.append(view)
            continue
        pieces += [b"".join(small), view]
        small = []
    if small:
        pieces.append(b"".join(small))
    return pieces


def decode(meta: bytes | bytearray, buffers: list[bytearray]) -> Message:
    """Rebuild a message from its pickle and buffers (arrays share the buffers' memory)."""
    message: Message = pickle.loads(meta, buffers=buffers)
    return message


class FrameReader:
    """Incremental frame parser that asks for memory to read into (``asyncio.BufferedProtocol``).

    ``buffer()`` returns where the next bytes go; ``advance(n)`` reports how many arrived.
    Small frames land in a scratch buffer, usually in one read; a buffer of ``_DIRECT_BYTES``
    or more is read straight into the bytearray its array will live in.
    """

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self._on_message = on_message
        self._scratch = bytearray(_SCRATCH_BYTES)
        self._start = 0  # unparsed bytes are scratch[start:end]
        self._end = 0
        self._direct: bytearray | None = None
        self._direct_filled = 0
        self._new_frame()

    def _new_frame(self) -> None:
        self._stage = "head"
        self._meta_length = 0
        self._lengths: list[int] = []
        self._meta = b""
        self._buffers: list[bytearray] = []

    def buffer(self) -> memoryview:
        if self._direct is not None:
            return memoryview(self._direct)[self._direct_filled :]
        if self._end == len(self._scratch):
            self._compact()
        return memoryview(self._scratch)[self._end :]

    def advance(self, n: int) -> None:
        if self._direct is not None:
            self._direct_filled += n
            if self._direct_filled < len(self._direct):
                return
            self._buffers.append(self._direct)
            self._direct = None
            self._next_buffer_or_finish()
        else:
            self._end += n
        self._parse()

    def _compact(self) -> None:
        pending = self._end - self._start
        if self._start > 0:
            self._scratch[:pending] = self._scratch[self._start : self._end]
        else:  # one stage needs more than the scratch holds
            self._scratch.extend(bytes(len(self._scratch)))
        self._start, self._end = 0, pending

    def _take(self, n: int) -> bytes | None:
        if self._end - self._start < n:
            return None
        data = bytes(self._scratch[self._start : self._start + n])
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        return data

    def _parse(self) -> None:
        while self._direct is None and self._parse_stage():
            pass

    def _parse_stage(self) -> bool:
        if self._stage == "head":
            data = self._take(_HEAD.size)
            if data is None:
                return False
            self._meta_length, count = _HEAD.unpack(data)
            if count > _MAX_BUFFERS:
                raise ValueError(f"corrupt frame: {count} buffers")
            self._lengths = [-1] * count
            self._stage = "lengths"
        elif self._stage == "lengths":
            data = self._take(_LEN.size * len(self._lengths))
            if data is None:
                return False
            self._lengths = [v for (v,) in _LEN.iter_unpack(data)]
            self._stage = "meta"
        elif self._stage == "meta":
            data = self._take(self._meta_length)
            if data is None:
                return False
            self._meta = data
            self._next_buffer_or_finish()
        else:
            return self._read_buffer()
        return True

    def _read_buffer(self) -> bool:
        length = self._lengths[len(self._buffers)]
        available = self._end - self._start
        if length >= _DIRECT_BYTES and available < length:
            target = bytearray(length)
            target[:available] = self._scratch[self._start : self._end]
            self._start = self._end = 0
            self._direct, self._direct_filled = target, available
            return False
        data = self._take(length)
        if data is None:
            return False
        self._buffers.append(bytearray(data))
        self._next_buffer_or_finish()
        return True

    def _next_buffer_or_finish(self) -> None:
        if len(self._buffers) < len(self._lengths):
            self._stage = "buffer"
            return
        message = decode(self._meta, self._buffers)
        self._new_frame()
        self._on_message(message)


# --- the blocking side, used by the replica process -------------------------------------------


def _drop_sent(pieces: list[Any], sent: int) -> list[Any]:
    while pieces and sent >= memoryview(pieces[0]).nbytes:
        sent -= memoryview(pieces[0]).nbytes
        pieces = pieces[1:]
    if sent:
        pieces = [memoryview(pieces[0]).cast("B")[sent:], *pieces[1:]]
    return pieces


class BlockingChannel:
    """The replica process's end of the socket: blocking sends and receives of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._inbox: list[Message] = []
        # One reader for the socket's life: the next frame's bytes may already be in its scratch.
        self._reader = FrameReader(self._inbox.append)

    def send(self, message: Message) -> None:
        """Send one frame (scatter-gather: large buffers are not joined)."""
        pieces = encode(message)
        while pieces:
            sent = self._sock.sendmsg(pieces[:1024])
            pieces = _drop_sent(pieces, sent)

    def receive(self) -> Message | None:
        """The next frame; None when the peer closed the socket."""
        while not self._inbox:
            n = self._sock.recv_into(self._reader.buffer())
            if n == 0:
                return None
            self._reader.advance(n)
        return self._inbox.pop(0)

    def cancelled(self) -> set[int]:
        """The batches cancelled by the frames already arrived, read without waiting; those
        frames leave the inbox, the others keep their order."""
        while True:
            try:
                n = self._sock.recv_into(self._reader.buffer(), 0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if n == 0:
                break  # closed: ``receive`` reports it
            self._reader.advance(n)
        seqs = {m.seq for m in self._inbox if isinstance(m, Cancel)}
        if seqs:
            self._inbox[:] = [m for m in self._inbox if not isinstance(m, Cancel)]
        return seqs
