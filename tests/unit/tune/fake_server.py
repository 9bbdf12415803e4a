"""Fake measured models for the tuner's unit tests: known surfaces, computed, never slept through.

``Surface`` gives each candidate its operating point directly (the best is known exactly).
``FakeServer`` answers each load step of a closed-loop ramp instead, from a simple model of a
batching server: ``r`` replicas on ``cores`` cores, batches costing ``a + k·rows`` ms; its
search trials may read p99 lower than the truth a confirmation reads (a lucky machine).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from inferd.tune.confirm import StepDown
from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.ramp import Ramp, start_guess
from inferd.tune.search import Trial
from inferd.tune.space import Candidate
from inferd.tune.trial import LoadSteps


def run_steps(
    steps: LoadSteps, step: Callable[[int], LoadPoint], memory_mb: float = 100.0
) -> Measurement:
    """What ``trial.run_trial`` does with its load steps, against ``step`` instead of a server."""
    points: list[LoadPoint] = []
    while (c := steps.next_concurrency(points)) is not None:
        points.append(step(c))
        assert len(points) < 50, "the steps must end"
    return steps.measurement(points, memory_mb)


@dataclass
class Surface:
    """Throughput peaks at the largest batch that meets the target, then falls 5 % per doubling
    (large caps let big batches form and break the target); replicas scale up to ``cores``."""

    slo_ms: float = 50.0
    a_ms: float = 2.0
    k_ms: float = 0.5
    cores: int = 2
    delay_gain: float = 0.0
    """Throughput gained per ms of queue delay (a model that likes full batches), up to 2 ms."""
    replica_mb: float = 100.0
    calls: list[Candidate] = field(default_factory=list)

    def batch_ms(self, rows: float) -> float:
        return self.a_ms + self.k_ms * rows

    def largest_batch(self, delay: float) -> int:
        """The largest batch whose worst latency (a running batch, then its own) fits."""
        rows = 0
        while 2 * self.batch_ms(rows + 1) + delay <= self.slo_ms:
            rows += 1
        return rows

    def __call__(self, candidate: Candidate) -> Measurement:
        self.calls.append(candidate)
        r = candidate.replicas()
        cap, delay = int(candidate["max_batch_size"]), float(candidate["max_queue_delay_ms"])
        memory = 50.0 + self.replica_mb * r + 0.1 * cap
        fit = self.largest_batch(delay)
        if fit == 0:
            return Measurement(0.0, 2 * self.batch_ms(1) + delay, memory)
        rows = min(cap, fit)
        per_replica = rows / self.batch_ms(rows) * 1e3
        if cap > fit:
            per_replica *= 0.95 ** math.log2(cap / fit)
        per_replica *= 1 + self.delay_gain * min(delay, 2.0) - 0.01 * delay
        throughput = per_replica * min(r, self.cores) * (0.97 if r > self.cores else 1.0)
        p99 = 2 * self.batch_ms(rows) + delay
        return Measurement(throughput, p99, memory, concurrency=rows * r)


@dataclass
class FakeServer:
    """A closed-loop load step against ``r`` replicas, batch cap ``B`` and delay ``d``:
    each replica serves ``c / r`` clients in rounds of batches of at most ``B`` rows; a batch
    that cannot fill waits out the delay; replicas beyond the cores time-share them."""

    a_ms: float = 2.0
    k_ms: float = 0.25
    cores: int = 2
    luck: float = 1.0
    """The search trials' steps read p99 this many times the truth (< 1: a lucky machine)."""
    steps: int = 0

    def step(self, candidate: Candidate, concurrency: int) -> LoadPoint:
        self.steps += 1
        r = candidate.replicas()
        cap, delay = int(candidate["max_batch_size"]), float(candidate["max_queue_delay_ms"])
        clients = math.ceil(concurrency / r)
        rows = min(cap, clients)
        latency = math.ceil(clients / rows) * (self.a_ms + self.k_ms * rows)
        if clients < cap:
            latency += delay
        latency *= max(1.0, r / self.cores)
        throughput = concurrency / latency * 1e3
        return LoadPoint(concurrency, throughput, 1.3 * latency, latency, num_ok=100)

    done: list[tuple[int, Measurement]] = field(default_factory=list)

    def measure(self, ramp: Ramp, candidate: Candidate) -> Measurement:
        """The trial: the ramp's steps against this server, started where earlier trials say."""
        ramp = dataclasses.replace(ramp, start=start_guess(self.done, candidate.replicas()))

        def lucky(c: int) -> LoadPoint:
            point = self.step(candidate, c)
            return dataclasses.replace(point, p99_ms=point.p99_ms * self.luck)

        measured = run_steps(ramp, lucky, memory_mb=100.0 * candidate.replicas())
        self.done.append((candidate.replicas(), measured))
        return measured

    def confirm(self, trial: Trial, steps: StepDown) -> Measurement:
        """A confirmation: its steps read the truth."""
        memory = trial.measurement.memory_mb
        return run_steps(steps, lambda c: self.step(trial.candidate, c), memory)


@dataclass
class LLMSurface:
    """An LLM engine: a step takes ``5 + 0.4·seqs + 0.004·budget`` ms; a prompt is prefilled in
    chunks of the token budget; p99 TTFT grows with the sequences sharing each step."""

    slo_ms: float = 120.0
    prompt_tokens: int = 512
    calls: list[Candidate] = field(default_factory=list)

    def __call__(self, candidate: Candidate) -> Measurement:
        self.calls.append(candidate)
        seqs, budget = int(candidate["max_num_seqs"]), int(candidate["max_num_batched_tokens"])
        step_ms = 5.0 + 0.4 * seqs + 0.004 * budget
        ttft = math.ceil(self.prompt_tokens / budget) * step_ms + step_ms * seqs / 4
        memory = 300.0 + 2.0 * seqs
        if ttft > self.slo_ms:
            return Measurement(0.0, ttft, memory)
        return Measurement(seqs / step_ms * 1e3, ttft, memory, concurrency=seqs)
