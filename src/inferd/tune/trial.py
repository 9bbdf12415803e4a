"""One trial: serve the model with a candidate configuration, find its capacity under the target,
read its memory, stop it. ``measure`` is the one place that calls ``inferd.bench``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inferd.bench import BenchSpec, run_bench
from inferd.config import ModelConfig
from inferd.errors import InferdError, ModelNotReady
from inferd.tune.candidate import write_candidate
from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.ramp import Ramp
from inferd.tune.serving import TrialServer
from inferd.tune.space import Candidate, SearchSpace

logger = logging.getLogger("inferd.tune")


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How each load step of a trial is run by ``inferd bench``."""

    step_s: float = 3.0
    """Measured seconds per step."""
    warmup_s: float = 1.0
    """Seconds of load before each step's measurement starts (not counted)."""
    rows: int = 1
    """Rows per request."""
    binary: bool = False
    """Send tensors with the binary extension instead of JSON."""
    processes: int = 1
    """Load generator processes (never more than the step's concurrency)."""
    timeout_s: float = 30.0
    api: str = "kserve"
    """kserve (tensor models: throughput in rows) or openai (LLMs: in output tokens)."""
    metric: str = "latency"
    """Whose p99 the target bounds: latency (whole request), ttft or itl (LLMs)."""
    prompt_tokens: int = 128
    max_tokens: int = 64

    @property
    def unit(self) -> str:
        """What throughput counts: inferences (rows), or an LLM's output tokens."""
        return "output tokens" if self.api == "openai" else "inferences"

    @property
    def metric_name(self) -> str:
        """The latency the target bounds, as the report names it."""
        return {"latency": "p99", "ttft": "p99 TTFT", "itl": "p99 ITL"}[self.metric]


def measure(url: str, model: str, concurrency: int, load: LoadSettings) -> LoadPoint:
    """One closed-loop load step against a running server: throughput (rows/s, or output
    tokens/s for an LLM) and the p99 of the latency the target bounds."""
    llm = load.api == "openai"
    spec = BenchSpec(
        url=url,
        model=model,
        api=load.api,
        concurrency=concurrency,
        duration_s=load.step_s,
        warmup_s=load.warmup_s,
        processes=min(load.processes, concurrency),
        rows=1 if llm else load.rows,
        binary=load.binary and not llm,
        timeout_s=load.timeout_s,
        prompt_tokens=load.prompt_tokens,
        max_tokens=load.max_tokens,
    )
    result = run_bench(spec)
    latency = {"latency": result.latency_ms, "ttft": result.ttft_ms, "itl": result.itl_ms}
    percentiles = latency.get(load.metric) or {}
    throughput = (result.output_tokens_per_s or 0.0) if llm else result.rows_per_s
    return LoadPoint(
        concurrency=concurrency,
        throughput=throughput,
        p99_ms=_ms(percentiles.get("p99")),
        p50_ms=_ms(percentiles.get("p50")),
        num_ok=result.num_ok,
        num_errors=result.num_errors,
        warnings=result.warnings,
    )


def _ms(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class TrialPlan:
    """Everything a trial needs besides the candidate."""

    model: ModelConfig
    space: SearchSpace
    ramp: Ramp
    load: LoadSettings
    workdir: Path
    """Where candidate folders and server logs go."""
    server_config: Path | None = None
    """``inferd.toml`` handed to the server (``--config``)."""
    start_timeout_s: float = 120.0


class LoadSteps(Protocol):
    """Which load steps a trial runs, and what they add up to: a search trial's ``Ramp``, or a
    confirmation's ``confirm.StepDown``."""

    def next_concurrency(self, points: Sequence[LoadPoint]) -> int | None: ...

    def measurement(self, points: Sequence[LoadPoint], memory_mb: float) -> Measurement: ...


def run_trial(plan: TrialPlan, candidate: Candidate, number: int, steps: LoadSteps) -> Measurement:
    """Serve ``candidate``, run the load ``steps`` decide, and stop the server."""
    trial_dir = plan.workdir / f"trial-{number:03d}"
    folder = write_candidate(plan.model, candidate, plan.space, trial_dir / plan.model.name)
    with TrialServer(folder, trial_dir / "server.log", plan.server_config) as server:
        try:
            server.wait_ready(plan.start_timeout_s)
        except ModelNotReady as e:
            return Measurement(0.0, math.inf, server.memory_mb(), error=e.message)
        points: list[LoadPoint] = []
        memory = 0.0
        while (concurrency := steps.next_concurrency(points)) is not None:
            try:
                point = measure(server.url, plan.model.name, concurrency, plan.load)
            except InferdError as e:
                return Measurement(0.0, math.inf, memory, error=e.message)
            logger.info(
                "  %3d clients: %9.1f %s/s, %s %8.2f ms, %d errors",
                concurrency,
                point.throughput,
                plan.load.unit,
                plan.load.metric_name,
                point.p99_ms,
                point.num_errors,
            )
            points.append(point)
            memory = max(memory, server.memory_mb())
        died = server.proc.poll() is not None
    measured = steps.measurement(points, memory)
    notes = tuple(dict.fromkeys(w for p in points for w in p.warnings))
    if died:
        return dataclasses.replace(measured, error="the server died during the trial")
    return dataclasses.replace(measured, warnings=notes)
