"""The Redis Streams connector: a consumer group member that answers entries with a model.

An input entry carries a KServe v2 JSON infer request in its field ``request``. Its answer is
added to the output stream with the fields ``input_id`` (the input entry's id), ``consumer``,
``response`` (the v2 JSON response, or ``{"id", "error", "status"}``) and, when it failed,
``error``. One Lua script adds the answer and acknowledges the entry, atomically, and only
if the add succeeded: an entry is acknowledged only once its answer is written, so a crash
loses nothing (at-least-once), and a duplicate carries the same ``input_id``.

On start the consumer first answers its own pending entries (read, never acknowledged: it
crashed), then, every ``claim_idle_ms / 2``, takes over with XAUTOCLAIM the entries other
consumers left pending longer than ``claim_idle_ms`` (they died). Several consumers in one
group share the entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from inferd.errors import ConfigError, InferdError, InvalidRequest
from inferd.jobs.stream import (
    DRAIN_TIMEOUT_S,
    Answer,
    StreamStats,
    answer_retrying,
    check_max_in_flight,
    error_document,
)

logger = logging.getLogger("inferd.jobs")

REQUEST_FIELD: Final = b"request"
WRITE_RETRY_DELAYS_S: Final = (0.5, 1.0, 2.0, 4.0)
"""Waits before writing an answer again while Redis fails; then the entry stays pending."""
RECONNECT_DELAY_S: Final = (0.5, 10.0)
"""First and longest wait before reading again after Redis failed (doubling in between)."""

# KEYS: input stream, output stream. ARGV: group, entry id, then the answer's field/value pairs.
# redis.call raises if XADD fails, so the entry is acknowledged only once its answer is written.
_ANSWER_AND_ACK: Final = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""

Entry = tuple[bytes, dict[bytes, bytes] | None]
"""(entry id, fields); fields are None or empty when the entry was deleted before its answer."""


@dataclass(frozen=True, slots=True)
class RedisStreamConfig:
    """Which streams and group, and how the consumer paces itself (validated on creation)."""

    url: str
    input_stream: str
    output_stream: str
    group: str
    consumer: str
    max_in_flight: int = 64
    claim_idle_ms: int = 60000
    block_ms: int = 1000

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--redis {self.url!r}: expected redis://HOST:PORT[/DB]")
        for flag, value in (
            ("--input-stream", self.input_stream),
            ("--output-stream", self.output_stream),
            ("--group", self.group),
            ("--consumer", self.consumer),
        ):
            if not value:
                raise ConfigError(f"--redis needs {flag}")
        if self.input_stream == self.output_stream:
            raise ConfigError("--input-stream and --output-stream must be different streams")
        check_max_in_flight(self.max_in_flight)
        if self.claim_idle_ms < 1:
            raise ConfigError(f"--claim-idle-ms must be >= 1, got {self.claim_idle_ms}")
        if self.block_ms < 1:
            raise ConfigError(f"--block-ms must be >= 1, got {self.block_ms}")


class RedisStreamJob:
    """One consumer of the group: reads entries, answers them, writes answers, acknowledges."""

    def __init__(self, config: RedisStreamConfig, answer: Answer) -> None:
        self._config = config
        self._answer = answer
        self._client: aioredis.Redis = aioredis.from_url(config.url, socket_connect_timeout=5.0)
        self._answer_and_ack = self._client.register_script(_ANSWER_AND_ACK)
        self._in_flight: dict[bytes, asyncio.Task[None]] = {}
        self._freed = asyncio.Event()
        self.stats = StreamStats()

    async def run(self, stop: asyncio.Event) -> StreamStats:
        """Consume until ``stop`` is set; then finish the entries in flight (those not done in
        time stay pending, for this consumer's next start or another's claim)."""
        try:
            await self._create_group()
            await self._answer_own_pending(stop)
            await self._consume(stop)  # rides out Redis failures from here on
        except RedisError as e:
            raise InferdError(f"Redis at {self._config.url} failed: {e}") from None
        finally:
            await self._drain()
            await self._client.aclose()
        return self.stats

    async def _create_group(self) -> None:
        c = self._config
        try:
            await self._client.xgroup_create(c.input_stream, c.group, id="0", mkstream=True)
            logger.info("created consumer group %r on stream %r", c.group, c.input_stream)
        except ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise InferdError(
                    f"cannot create group {c.group!r} on {c.input_stream!r}: {e}"
                ) from None
        except RedisError as e:
            raise InferdError(f"cannot reach Redis at {c.url}: {e}") from None

    async def _answer_own_pending(self, stop: asyncio.Event) -> None:
        """Entries delivered to this consumer but never acknowledged: it crashed before."""
        c = self._config
        after = b"0"
        while not stop.is_set():
            room = await self._room()
            reply = await self._client.xreadgroup(
                c.group, c.consumer, {c.input_stream: after}, count=room
            )
            entries = _entries(reply)
            if not entries:
                return
            logger.info("answering %d entries left pending by this consumer", len(entries))
            self._start(entries)
            after = entries[-1][0]

    async def _consume(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_DELAY_S[0]
        next_claim = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    await self._claim_idle(stop)
                    next_claim = time.monotonic() + self._config.claim_idle_ms / 2e3
                await self._read_new()
                delay = RECONNECT_DELAY_S[0]
            except RedisError as e:
                logger.warning("Redis failed (%s); reading again in %.1f s", e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(2 * delay, RECONNECT_DELAY_S[1])

    async def _read_new(self) -> None:
        c = self._config
        room = await self._room()
        reply = await self._client.xreadgroup(
            c.group, c.consumer, {c.input_stream: ">"}, count=room, block=c.block_ms
        )
        self._start(_entries(reply))

    async def _claim_idle(self, stop: asyncio.Event) -> None:
        """Take over the entries that other (dead) consumers left pending too long."""
        c = self._config
        start: Any = "0-0"
        while not stop.is_set():
            room = await self._room()
            reply = await self._client.xautoclaim(
                c.input_stream, c.group, c.consumer, c.claim_idle_ms, start, count=room
            )
            start, claimed = reply[0], [e for e in reply[1] if e[0] not in self._in_flight]
            if claimed:
                logger.info("claimed %d entries idle for %d ms", len(claimed), c.claim_idle_ms)
                self._start(claimed)
            if start in (b"0-0", "0-0"):
                return

    async def _room(self) -> int:
        """Free places for entries, once there is at least one (answers free them)."""
        while len(self._in_flight) >= self._config.max_in_flight:
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 1.0)
        return self._config.max_in_flight - len(self._in_flight)

    def _start(self, entries: Sequence[Entry]) -> None:
        loop = asyncio.get_running_loop()
        for entry_id, fields in entries:
            self._in_flight[entry_id] = loop.create_task(self._process(entry_id, fields))

    async def _process(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        try:
            default_id = entry_id.decode()
            data = (fields or {}).get(REQUEST_FIELD)
            error: InferdError | None
            if data is None:
                error = missing = _missing_request(default_id, fields)
                body = error_document(default_id, missing)
            else:
                body, error = await answer_retrying(self._answer, data, default_id)
            if await self._write(entry_id, body, error):
                self.stats.answered += 1
                self.stats.errors += error is not None
        finally:
            self._in_flight.pop(entry_id, None)
            self._freed.set()

    async def _write(self, entry_id: bytes, body: bytes, error: InferdError | None) -> bool:
        """Add the answer and acknowledge the entry, in one step; False if Redis kept failing."""
        c = self._config
        fields: list[bytes | str] = [b"input_id", entry_id, b"consumer", c.consumer]
        fields += [b"response", body]
        if error is not None:
            fields += [b"error", error.message]
        args = [c.group, entry_id, *fields]
        for delay in (*WRITE_RETRY_DELAYS_S, None):
            try:
                await self._answer_and_ack(keys=[c.input_stream, c.output_stream], args=args)
                return True
            except RedisError as e:
                if delay is None:
                    logger.error(
                        "could not write the answer to %s (%s): it stays pending", entry_id, e
                    )
                    return False
                await asyncio.sleep(delay)
        return False

    async def _drain(self) -> None:
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)
            logger.warning("left %d entries pending after %.0f s", len(pending), DRAIN_TIMEOUT_S)


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply: ``[[stream, [(id, fields), ...]], ...]``."""
    return [(entry_id, fields) for _, items in reply or () for entry_id, fields in items]


def _missing_request(entry_id: str, fields: dict[bytes, bytes] | None) -> InvalidRequest:
    if not fields:
        return InvalidRequest(f"entry {entry_id} was deleted before it was answered")
    names = ", ".join(sorted(k.decode(errors="replace") for k in fields))
    return InvalidRequest(
        f"entry {entry_id} has no field 'request' (it has {names}); "
        "put the v2 JSON infer request in a field named 'request'"
    )
