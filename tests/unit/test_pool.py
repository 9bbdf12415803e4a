"""The replica pool with fake replicas: routing, retries, restarts, draining, capacity."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inferd.clock import FakeClock
from inferd.errors import ReplicaUnavailable
from inferd.replicas.pool import OnExit, ReplicaPool, RestartPolicy

Tensors = dict[str, np.ndarray]


class FakeReplica:
    """Doubles its input; ``gate`` holds batches; ``die()`` acts like kill -9."""

    def __init__(self, index: int, on_exit: OnExit) -> None:
        self.index = index
        self.on_exit = on_exit
        self.gate = asyncio.Event()
        self.gate.set()
        self.seen = 0
        self.closed = False
        self._pending: list[asyncio.Future[None]] = []

    @property
    def signature(self) -> tuple[tuple[()], tuple[()]]:
        return (), ()

    async def infer(self, inputs: Tensors) -> Tensors:
        self.seen += 1
        waiter = asyncio.ensure_future(self.gate.wait())
        self._pending.append(waiter)  # type: ignore[arg-type]
        try:
            await waiter
        except asyncio.CancelledError:
            raise ReplicaUnavailable(f"replica {self.index} died") from None
        return {"y": inputs["x"] * 2}

    def die(self) -> None:
        for waiter in self._pending:
            waiter.cancel()
        self.on_exit(self)  # type: ignore[arg-type]

    async def close(self) -> None:
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeReplica] = []

    async def __call__(self, index: int, on_exit: OnExit) -> FakeReplica:
        replica = FakeReplica(index, on_exit)
        self.made.append(replica)
        return replica


def x(v: float) -> Tensors:
    return {"x": np.full((1, 1), v, np.float32)}


FAST = RestartPolicy(initial_s=0.01, max_s=0.05)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_batches_go_to_the_least_busy_replica() -> None:
    factory = Factory()
    pool = ReplicaPool("m", factory, restart=FAST)
    await pool.start(2)
    a, b = factory.made
    a.gate.clear()
    first = asyncio.ensure_future(pool.infer(x(1)))
    await settle()
    second = asyncio.ensure_future(pool.infer(x(2)))
    await settle()
    assert (a.seen, b.seen) == (1, 1)
    a.gate.set()
    await asyncio.gather(first, second)
    await pool.close()


async def test_a_batch_on_a_dying_replica_is_retried_elsewhere() -> None:
    factory = Factory()
    pool = ReplicaPool("m", factory, restart=FAST)
    await pool.start(2)
    a, _ = factory.made
    a.gate.clear()
    pending = asyncio.ensure_future(pool.infer(x(3)))
    await settle()
    a.die()
    out = await pending
    np.testing.assert_array_equal(out.outputs["y"], [[6.0]])
    assert pool.ready_count == 1
    await pool.close()


async def test_without_idempotence_the_death_is_reported_not_retried() -> None:
    factory = Factory()
    pool = ReplicaPool("m", factory, idempotent=False, restart=FAST)
    await pool.start(2)
    factory.made[0].gate.clear()
    pending = asyncio.ensure_future(pool.infer(x(3)))
    await settle()
    factory.made[0].die()
    with pytest.raises(ReplicaUnavailable, match="not retried: model 'm' is not idempotent"):
        await pending
    await pool.close()


async def test_a_dead_replica_is_restarted_and_counted() -> None:
    factory = Factory()
    restarts: list[str] = []
    pool = ReplicaPool("m", factory, restart=FAST)
    pool.on_restart = restarts.append
    await pool.start(1)
    factory.made[0].die()
    assert pool.ready_count == 0
    for _ in range(200):
        if pool.ready_count == 1:
            break
        await asyncio.sleep(0.005)
    assert pool.ready_count == 1 and len(factory.made) == 2 and restarts == ["crash"]
    out = await pool.infer(x(1))
    np.testing.assert_array_equal(out.outputs["y"], [[2.0]])
    await pool.close()


async def test_scaling_down_drains_before_stopping() -> None:
    factory = Factory()
    pool = ReplicaPool("m", factory, restart=FAST)
    await pool.start(2)
    for replica in factory.made:
        replica.gate.clear()
    busy = [asyncio.ensure_future(pool.infer(x(i))) for i in range(2)]
    await settle()
    await pool.scale_to(1)
    await settle()
    assert pool.current == 1
    assert not any(r.closed for r in factory.made)  # the drained one still finishes its batch
    for replica in factory.made:
        replica.gate.set()
    results = await asyncio.gather(*busy)
    assert [float(r.outputs["y"][0, 0]) for r in results] == [0.0, 2.0]
    for _ in range(50):
        if sum(r.closed for r in factory.made) == 1:
            break
        await asyncio.sleep(0.005)
    assert sum(r.closed for r in factory.made) == 1
    await pool.close()


async def test_capacity_follows_ready_replicas() -> None:
    factory = Factory()
    pool = ReplicaPool("m", factory, restart=FAST)
    await pool.start(1)
    assert await pool.acquire(timeout=0.01)
    assert not await pool.acquire(timeout=0.01)  # one replica, one batch in flight
    await pool.scale_to(2)
    assert await pool.acquire(timeout=1.0)  # room appears once the new replica is ready
    pool.release()
    pool.release()
    await pool.scale_to(0)
    await settle()
    assert pool.current == 0
    assert not await pool.acquire(timeout=0.01)
    await pool.close()


class SerialReplica(FakeReplica):
    """Computes its batches one at a time, in order, each when the test gives it its turn."""

    def __init__(self, index: int, on_exit: OnExit) -> None:
        super().__init__(index, on_exit)
        self.turns: list[asyncio.Event] = []

    async def infer(self, inputs: Tensors) -> Tensors:
        turn = asyncio.Event()
        self.turns.append(turn)
        await turn.wait()
        return {"y": inputs["x"] * 2}


async def test_a_batch_sent_ahead_is_timed_from_when_its_replica_came_free() -> None:
    clock = FakeClock()
    made: list[SerialReplica] = []

    async def factory(index: int, on_exit: OnExit) -> SerialReplica:
        made.append(SerialReplica(index, on_exit))
        return made[-1]

    pool = ReplicaPool("m", factory, restart=FAST, clock=clock)
    await pool.start(1)
    assert not pool.try_acquire_ahead()  # room ahead only once the replica is taken
    assert pool.try_acquire() and not pool.try_acquire()
    assert pool.try_acquire_ahead() and not pool.try_acquire_ahead()  # one per replica
    first = asyncio.ensure_future(pool.infer(x(1)))
    second = asyncio.ensure_future(pool.infer(x(2)))  # sent ahead: waits at the replica
    await settle()
    clock.advance(1.0)
    made[0].turns[0].set()
    assert (await first).busy_s == 1.0
    clock.advance(2.0)
    made[0].turns[1].set()
    done = await second
    assert done.busy_s == 2.0  # its round trip was 3 s, 1 s of it behind the first batch
    np.testing.assert_array_equal(done.outputs["y"], [[4.0]])
    await pool.close()
