"""``inferd tune``'s work: settings in, trials run (or resumed), report folder out.

The pieces: ``calibration`` prunes the space, ``search`` picks the candidates, ``trial`` runs
each on a real server, ``confirm`` measures the best again before it is recommended, ``state``
remembers them, ``report`` and ``plot`` write the folder. A Ctrl-C stops the running trial's
server (``TrialServer`` exits its context) and lands here, where the report of the finished
trials is written before the interrupt goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from inferd.config import ModelConfig, load_server_config
from inferd.errors import ConfigError
from inferd.interrupts import raising_keyboard_interrupt
from inferd.repository import discover
from inferd.tune.candidate import candidate_table, dump_toml
from inferd.tune.confirm import (
    ConfirmPolicy,
    Measure,
    StepDown,
    confirm,
    confirmed_trials,
    recommend,
)
from inferd.tune.measurement import Measurement
from inferd.tune.ramp import Ramp, start_guess
from inferd.tune.report import PLOT, ReportData, write_report
from inferd.tune.search import Objective, Trial, search
from inferd.tune.settings import TuneSettings
from inferd.tune.space import (
    MAX_BATCH_SIZE,
    Candidate,
    SearchSpace,
    llm_space,
    prune_tensor_space,
    tensor_space,
)
from inferd.tune.state import TrialLog
from inferd.tune.trial import LoadSteps, TrialPlan, run_trial

logger = logging.getLogger("inferd.tune")

TRIALS_DIR: Final = "trials"
INTERRUPTED: Final = "interrupted"
CONFIRM_WARMUP_S: Final = 2.0
"""A confirmation warms up as long as ``inferd bench`` does by default."""

RunTrial = Callable[[TrialPlan, Candidate, int, LoadSteps], Measurement]
"""Serve a candidate as trial number N and run the given load steps on it."""


@dataclass(frozen=True, slots=True)
class TuneOutcome:
    """What ``tune`` found and where it wrote it."""

    best: Trial | None
    """The recommendation, with its confirmation's figures when it was confirmed."""
    trials: tuple[tuple[int, Trial], ...]
    """The search's trials, each with its own figures."""
    status: str
    report: list[Path]
    space: SearchSpace
    """The space searched (after pruning)."""
    unit: str = "inferences"
    """What throughput counts (an LLM's: output tokens)."""
    metric: str = "p99"
    """The latency the target bounds: p99, p99 TTFT or p99 ITL."""
    unconfirmed: Measurement | None = None
    """The recommendation's figures in its search trial, when a confirmation replaced them."""


def tune(settings: TuneSettings, run: RunTrial = run_trial) -> TuneOutcome:
    """Search, trial by trial, and write the report folder. A Ctrl-C ends the search: the
    report of the finished trials is written and the outcome's status says ``interrupted``."""
    model = resolve_model(settings.model_path, settings.model_name)
    settings = _with_load_for(settings, model)
    if model.backend == "llm":
        space = llm_space(settings.max_num_seqs, settings.token_budgets)
    else:
        max_batch = settings.max_batch_size if model.batched else 0
        space = tensor_space(settings.max_replicas, max_batch, settings.delays_ms)
    compute_ms: dict[int, float] = {}
    if model.backend != "llm" and model.batched and settings.calibrate:
        compute_ms = _calibrate(model, space, settings.slo_p99_ms)
        space = prune_tensor_space(space, compute_ms, settings.slo_p99_ms)
    objective = Objective(settings.slo_p99_ms, settings.memory_budget_mb)
    log = TrialLog(settings.out, settings.fingerprint(model))
    plan = TrialPlan(
        model=model,
        space=space,
        ramp=Ramp(settings.slo_p99_ms, settings.max_concurrency, headroom=settings.headroom),
        load=settings.load,
        workdir=settings.out / TRIALS_DIR,
        server_config=settings.server_config,
        start_timeout_s=settings.start_timeout_s,
    )
    try:
        with _sigterm_interrupts():
            result = search(space, objective, _evaluator(plan, log, run), settings.max_trials)
            status = "finished" if result.complete else "trial budget spent"
            policy = ConfirmPolicy(plan.ramp, settings.confirm, settings.confirm_steps)
            trials = [t for _, t in log.trials()]
            confirm(trials, objective, _confirmer(plan, log, run, settings.confirm_s), policy)
    except KeyboardInterrupt:
        # The running trial's server is already stopped (its context has exited).
        logger.warning("interrupted: writing the report of the trials that finished")
        status = INTERRUPTED
    return _report(settings, model, space, objective, log, status, compute_ms)


def _confirmer(plan: TrialPlan, log: TrialLog, run: RunTrial, confirm_s: float) -> Measure:
    """``confirm``'s measuring: a confirmation already in the log is read back (a resumed run
    replays them); a new one serves the candidate again with ``confirm_s``-second steps."""
    warmup_s = max(plan.load.warmup_s, CONFIRM_WARMUP_S)
    again = dataclasses.replace(
        plan, load=dataclasses.replace(plan.load, step_s=confirm_s, warmup_s=warmup_s)
    )

    def measure(trial: Trial, steps: StepDown) -> Measurement:
        key = trial.candidate.key()
        known = log.confirmations.get(key)
        if known is not None:
            logger.info("trial %d: %s confirmed before, in %s", known[0], key, log.path)
            return known[1]
        number = log.next_number()
        shutil.rmtree(plan.workdir / f"trial-{number:03d}", ignore_errors=True)  # unfinished
        loads = ", then ".join(str(c) for c in steps.loads)
        logger.info("trial %d: %s again, to confirm (%s clients)", number, key, loads)
        measured = run(again, trial.candidate, number, steps)
        log.append(number, trial.candidate, measured, confirms=True)
        logger.info("trial %d: %s", number, _describe(measured, plan))
        return measured

    return measure


def _confirmations(log: TrialLog) -> dict[Candidate, Measurement]:
    """The log's confirmations, by the candidate of the trial each confirms."""
    return {
        t.candidate: log.confirmations[t.candidate.key()][1]
        for _, t in log.trials()
        if t.candidate.key() in log.confirmations
    }


def _sigterm_interrupts() -> contextlib.AbstractContextManager[None]:
    """SIGTERM (a ``kill``, a job scheduler) stops the tuner like Ctrl-C: the running trial's
    server is stopped and the report written, instead of the server being orphaned."""
    return raising_keyboard_interrupt(signal.SIGTERM)


def _with_load_for(settings: TuneSettings, model: ModelConfig) -> TuneSettings:
    """An LLM is loaded through the OpenAI API and its target bounds p99 TTFT unless
    ``slo_metric`` says otherwise; a tensor model's bounds the whole request's latency."""
    llm = model.backend == "llm"
    metric = settings.slo_metric or ("ttft" if llm else "latency")
    if not llm and metric != "latency":
        raise ConfigError(f"--slo-metric {metric}: only LLMs stream tokens; use latency")
    load = dataclasses.replace(settings.load, api="openai" if llm else "kserve", metric=metric)
    return dataclasses.replace(settings, load=load)


def resolve_model(path: Path, name: str | None) -> ModelConfig:
    """The one model at ``path`` (or the one called ``name`` there)."""
    entries = discover([path])
    if name is not None:
        entries = [e for e in entries if e.name == name]
        if not entries:
            found = ", ".join(e.name for e in discover([path]))
            raise ConfigError(f"--model {name}: no such model at {path} (found: {found})")
    if len(entries) > 1:
        names = ", ".join(e.name for e in entries)
        raise ConfigError(f"{path} holds several models ({names}); choose one with --model")
    entry = entries[0]
    if entry.config is None:
        raise ConfigError(f"model {entry.name!r} at {path} cannot be served: {entry.error}")
    return entry.config


def _calibrate(model: ModelConfig, space: SearchSpace, slo_p99_ms: float) -> dict[int, float]:
    from inferd.tune.calibration import compute_ms_by_batch

    sizes = [int(b) for b in space.dimension(MAX_BATCH_SIZE).values]
    compute_ms = compute_ms_by_batch(model, sizes, slo_p99_ms)
    if compute_ms:
        logger.info(
            "calibration (the model alone): %s",
            ", ".join(f"batch {b}: {ms:.3g} ms" for b, ms in compute_ms.items()),
        )
    return compute_ms


def _evaluator(plan: TrialPlan, log: TrialLog, run: RunTrial) -> Callable[[Candidate], Measurement]:
    def evaluate(candidate: Candidate) -> Measurement:
        known = log.lookup(candidate)
        if known is not None:
            logger.info("trial %d: %s (done before, in %s)", known[0], candidate.key(), log.path)
            return known[1].measurement
        number = log.next_number()
        shutil.rmtree(plan.workdir / f"trial-{number:03d}", ignore_errors=True)  # unfinished
        done = [(t.candidate.replicas(), t.measurement) for _, t in log.trials()]
        start = start_guess(done, candidate.replicas())
        logger.info("trial %d: %s (ramp from %d clients)", number, candidate.key(), start)
        measured = run(plan, candidate, number, dataclasses.replace(plan.ramp, start=start))
        log.append(number, candidate, measured)
        logger.info("trial %d: %s", number, _describe(measured, plan))
        return measured

    return evaluate


def _describe(m: Measurement, plan: TrialPlan) -> str:
    metric, unit = plan.load.metric_name, plan.load.unit
    if m.error is not None:
        return "failed: " + m.error.splitlines()[0]
    if not m.meets_slo:
        target = plan.ramp.slo_p99_ms
        return f"misses {metric} {target:g} ms even at the lightest load ({m.p99_ms:.2f} ms)"
    return (
        f"{m.throughput:.1f} {unit}/s at {metric} {m.p99_ms:.2f} ms with {m.concurrency} "
        f"clients, {m.memory_mb:.0f} MiB"
    )


def _report(
    settings: TuneSettings,
    model: ModelConfig,
    space: SearchSpace,
    objective: Objective,
    log: TrialLog,
    status: str,
    compute_ms: dict[int, float],
) -> TuneOutcome:
    """Write the report of every finished trial in the folder."""
    from inferd.tune.plot import plot_available, plot_trials

    trials = log.trials()
    confirmations = _confirmations(log)
    best = recommend([t for _, t in trials], confirmations, objective)
    plot_note = plot_available()
    if plot_note is None:
        load = settings.load
        title = f"{model.name}: {load.metric_name} target {settings.slo_p99_ms:g} ms"
        plot_trials(
            settings.out / PLOT,
            confirmed_trials([t for _, t in trials], confirmations),
            best,
            settings.slo_p99_ms,
            title,
            load.unit,
            load.metric_name,
        )
    data = ReportData(
        model_name=model.name,
        model_path=model.path,
        objective=objective,
        headroom=settings.headroom,
        price_per_hour=_price(settings, model),
        space=space,
        trials=trials,
        best=best,
        status=status,
        compute_ms=compute_ms,
        plot_note=plot_note,
        best_config=None if best is None else _full_config(model, best, space),
        unit=settings.load.unit,
        metric=settings.load.metric_name,
        bench_flags=_bench_flags(settings),
        confirmations=dict(log.confirmations),
        confirm_s=settings.confirm_s,
    )
    written = write_report(settings.out, data)
    if plot_note is None:
        written.append(settings.out / PLOT)
    load = settings.load
    unconfirmed = None
    if best is not None and best.candidate in confirmations:
        unconfirmed = log.finished[best.candidate.key()][1].measurement
    return TuneOutcome(
        best, trials, status, written, space, load.unit, load.metric_name, unconfirmed
    )


def _full_config(model: ModelConfig, best: Trial, space: SearchSpace) -> str:
    return dump_toml(candidate_table(model, best.candidate, space))


def _price(settings: TuneSettings, model: ModelConfig) -> float:
    """--price-per-hour, else the model's price_per_hour, else the server config's."""
    if settings.price_per_hour is not None:
        return settings.price_per_hour
    if model.price_per_hour is not None:
        return model.price_per_hour
    return load_server_config(settings.server_config).price_per_hour


def _bench_flags(settings: TuneSettings) -> str:
    """The ``inferd bench`` flags that send the trials' requests."""
    load = settings.load
    if load.api == "openai":
        return f" --api openai --prompt-tokens {load.prompt_tokens} --max-tokens {load.max_tokens}"
    flags = f" --slo-ms {settings.slo_p99_ms:g}"
    flags += f" --rows {load.rows}" if load.rows != 1 else ""
    return flags + (" --binary" if load.binary else "")
