"""The main of a generator process: ``python -m inferd.bench.worker_process``.

Messages come in on stdin and go out on stdout (pickled, ``multiprocessing.connection``
framing); anything the process prints goes to stderr so that it cannot corrupt them.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection as Pipe

from inferd.bench.workers import worker_main


def main() -> None:
    """Take the channel's file descriptors, point stdout at stderr, and run the worker."""
    inbox = Pipe(os.dup(0), writable=False)
    outbox = Pipe(os.dup(1), readable=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        worker_main(inbox, outbox)
    finally:
        inbox.close()
        outbox.close()


if __name__ == "__main__":
    main()
