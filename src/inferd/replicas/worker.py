"""The main function of a replica process: load one model, then compute batches until told to stop.

Kept apart from ``process_replica`` (the front end's handle on this process) so that the loop is
plain blocking code: one socket, one model, one batch at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import time

from inferd.config import ModelConfig
from inferd.errors import ConfigError, InferdError
from inferd.gc_tuning import freeze_startup_objects, tune_for_serving
from inferd.replicas.protocol import (
    BlockingChannel,
    Cancel,
    Failed,
    Infer,
    LoadFailed,
    Ready,
    Result,
    Shutdown,
)
from inferd.replicas.replica import predict_checked
from inferd.repository import load_model

logger = logging.getLogger("inferd.worker")

_NICENESS = 5


def replica_main(sock: socket.socket, config: ModelConfig, threads: int) -> None:
    """Entry point of a replica process (spawned, so it starts from a clean interpreter)."""
    # Ctrl-C in a terminal, and systemd's stop, signal the whole process group: the front end
    # owns the shutdown and stops its replicas in order (they also leave when its socket
    # closes). A replica dying of the same signal would print a traceback and be reported
    # dead, even restarted, during the shutdown. SIGKILL still stops one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    tune_for_serving()
    channel = BlockingChannel(sock)
    _limit_threads(threads)
    # Below the front end: on a busy machine the event loop must still read requests, shed and
    # time them out; a replica that waits a little longer for the CPU costs only throughput.
    os.nice(_NICENESS)
    try:
        backend, resolved = load_model(dataclasses.replace(config, threads=threads))
    except InferdError as e:
        channel.send(LoadFailed(e))
        return
    except BaseException as e:  # a broken model file may raise anything
        channel.send(LoadFailed(ConfigError(f"model {config.name!r}: {type(e).__name__}: {e}")))
        return
    freeze_startup_objects()  # torch's modules and the model: never walked again
    channel.send(Ready(os.getpid(), resolved.inputs, resolved.outputs))
    _serve(channel, config.name, backend)
    sys.exit(0)


def _limit_threads(threads: int) -> None:
    # The fork server imported numpy (and maybe torch) before this replica's share of the cores
    # was known: cap the BLAS and OpenMP pools now, as the environment would have at import.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class _Skips:
    """Batches cancelled before they started. A Cancel that arrives once its batch was taken
    comes too late and is dropped, so the set never grows."""

    def __init__(self) -> None:
        self._seqs: set[int] = set()
        self._last = -1

    def cancel(self, seq: int) -> None:
        if seq > self._last:
            self._seqs.add(seq)

    def take(self, seq: int) -> bool:
        """Whether batch ``seq``, next to start, is to be skipped."""
        self._last = seq
        if not self._seqs:
            return False
        skip = seq in self._seqs
        self._seqs = {s for s in self._seqs if s > seq}
        return skip


def _serve(channel: BlockingChannel, name: str, backend: object) -> None:
    skips = _Skips()
    while True:
        try:
            message = channel.receive()
            if isinstance(message, Infer):
                # A batch sent ahead waited here while the one before computed: its clients
                # may have left meanwhile.
                for seq in channel.cancelled():
                    skips.cancel(seq)
        except OSError:
            return
        if message is None or isinstance(message, Shutdown):
            return
        if isinstance(message, Cancel):
            skips.cancel(message.seq)
            continue
        if not isinstance(message, Infer):
            logger.error("replica of %r got an unexpected %s", name, type(message).__name__)
            continue
        if skips.take(message.seq):
            continue  # nobody waits for its answer
        started = time.perf_counter()
        try:
            outputs = predict_checked(name, backend, message.inputs)  # type: ignore[arg-type]
        except InferdError as e:
            channel.send(Failed(message.seq, e))
            continue
        channel.send(Result(message.seq, outputs, time.perf_counter() - started))
