"""``inferd stream``: answer a flow of inputs with a model loaded in this process."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferd.cli.paths import add_paths

if TYPE_CHECKING:  # only for annotations: importing this module stays cheap
    import asyncio
    from collections.abc import Callable

    from inferd.jobs.redis_stream import RedisStreamConfig
    from inferd.jobs.stream import LinesConfig, StreamStats

_DESCRIPTION = """\
Answer a flow of inputs with MODEL, loaded in this process (batched as the server batches).

Each input is a KServe v2 JSON infer request, as POST /v2/models/MODEL/infer takes it; its
answer is the v2 JSON response, or {"id", "error", "status"}, with the request's "id".

  inferd stream echo < requests.jsonl            JSON Lines from stdin, answers on stdout
  inferd stream echo --input log.jsonl --follow  follow a file as it grows (like tail -f)
  inferd stream echo --redis redis://127.0.0.1:6379 --input-stream requests \\
      --output-stream answers --group inferd --consumer worker-1

A line without an "id" is answered with its line number as id. Answers come as they are
computed, not in input order. Redis entries carry the request in their field "request"; each
answer is added to the output stream (fields input_id, consumer, response, and error when it
failed) and the entry is acknowledged only then, so a crash loses nothing (see
docs/streaming.md).
"""


def add_parser(commands: Any) -> None:
    stream: argparse.ArgumentParser = commands.add_parser(
        "stream",
        help="answer JSON Lines (stdin, a followed file) or a Redis stream with a model",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stream.add_argument("model", metavar="MODEL", help="name of the model to run")
    add_paths(stream)
    stream.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        metavar="N",
        help="inputs being computed at once; reading waits at the bound (default 64)",
    )
    stream.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="what to log on stderr (default warning; stdout holds only answers)",
    )
    _add_file_options(stream.add_argument_group("JSON Lines (default: stdin to stdout)"))
    _add_redis_options(stream.add_argument_group("Redis Streams (with --redis)"))


def _add_file_options(group: Any) -> None:
    group.add_argument("--input", type=Path, metavar="FILE", help="read this file instead of stdin")
    group.add_argument(
        "--follow",
        action="store_true",
        help="with --input: after the end, wait for lines appended to FILE (stop with Ctrl-C)",
    )
    group.add_argument(
        "--poll-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="with --follow: how often to look for new lines (default 50)",
    )


def _add_redis_options(group: Any) -> None:
    group.add_argument(
        "--redis", metavar="URL", help="consume a Redis stream, e.g. redis://host:6379/0"
    )
    group.add_argument("--input-stream", metavar="KEY", help="stream of requests")
    group.add_argument("--output-stream", metavar="KEY", help="stream the answers are added to")
    group.add_argument("--group", metavar="NAME", help="consumer group (created if absent)")
    group.add_argument(
        "--consumer",
        metavar="NAME",
        help="this consumer's name in the group (default HOST-PID); keep it across restarts "
        "so that a restart answers its own unacknowledged entries at once",
    )
    group.add_argument(
        "--claim-idle-ms",
        type=int,
        default=60000,
        metavar="MS",
        help="take over entries another consumer left unacknowledged this long (default 60000)",
    )
    group.add_argument(
        "--block-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="longest wait of one read for new entries (default 1000)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    from inferd.cli.paths import model_paths
    from inferd.errors import ConfigError, InferdError

    logging.getLogger().setLevel((args.log_level or "warning").upper())
    job = _job_config(args)  # a ConfigError naming the flag, before any model loads
    try:
        stats = asyncio.run(_run(job, args.model, model_paths(args.paths)))
    except ConfigError:
        raise
    except InferdError as e:
        print(f"inferd stream: {e.message}", file=sys.stderr)
        return 1
    level = logging.WARNING if stats.errors else logging.INFO
    logging.getLogger("inferd.jobs").log(
        level, "answered %d inputs, %d of them with an error", stats.answered, stats.errors
    )
    # Lines end like a batch: 1 says some failed. A Redis consumer is a service: its errors
    # are answers in the output stream, and a stop on request is a success.
    return 1 if stats.errors and args.redis is None else 0


def _job_config(args: argparse.Namespace) -> LinesConfig | RedisStreamConfig:
    """The validated ``LinesConfig`` or ``RedisStreamConfig`` the flags describe."""
    from inferd.errors import ConfigError
    from inferd.jobs.stream import LinesConfig

    stream_flags = {
        "--input-stream": args.input_stream,
        "--output-stream": args.output_stream,
        "--group": args.group,
        "--consumer": args.consumer,
    }
    if args.redis is None:
        given = [flag for flag, value in stream_flags.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --redis URL")
        return LinesConfig(args.input, args.follow, args.poll_ms / 1e3, args.max_in_flight)
    if args.input is not None or args.follow:
        raise ConfigError("--input and --follow read JSON Lines; they do not go with --redis")
    return _redis_config(args)


def _redis_config(args: argparse.Namespace) -> RedisStreamConfig:
    import os
    import socket

    from inferd.jobs.redis_stream import RedisStreamConfig

    return RedisStreamConfig(
        url=args.redis,
        input_stream=args.input_stream or "",
        output_stream=args.output_stream or "",
        group=args.group or "",
        consumer=args.consumer or f"{socket.gethostname()}-{os.getpid()}",
        max_in_flight=args.max_in_flight,
        claim_idle_ms=args.claim_idle_ms,
        block_ms=args.block_ms,
    )


async def _run(job: LinesConfig | RedisStreamConfig, model: str, paths: list[Path]) -> StreamStats:
    """Load the model, then answer the lines or the Redis stream until done or signalled."""
    import asyncio
    import functools
    import signal

    from inferd.jobs.stream import LinesConfig, open_model, run_lines
    from inferd.server.websocket import answer_message

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_model(paths, model) as served:
        answer = functools.partial(answer_message, served)
        if isinstance(job, LinesConfig):
            return await run_lines(job, answer, _stdout_writer(stop), stop)
        from inferd.jobs.redis_stream import RedisStreamJob

        return await RedisStreamJob(job, answer).run(stop)


def _stdout_writer(stop: asyncio.Event) -> Callable[[bytes], None]:
    """Write one answer per line and flush it; a closed stdout (``| head``) stops the job."""
    import os
    import sys

    out = sys.stdout.buffer

    def write(body: bytes) -> None:
        nonlocal out
        try:
            out.write(body)
            out.write(b"\n")
            out.flush()
        except BrokenPipeError:
            stop.set()
            # Python would report the closed pipe again when flushing stdout at exit.
            out = open(os.devnull, "wb")  # noqa: SIM115
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115

    return write
