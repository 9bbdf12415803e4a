"""The tuner end to end on a fake measured model: report folder, resume, interrupt, refusal to
mix incomparable trials, confirmation. No server runs: trials are answered by the fake
``Surface``, confirmations step by step from a chosen p99 per load."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_server import Surface, run_steps

from inferd.errors import ConfigError
from inferd.tune.confirm import StepDown
from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.report import FULL_CONFIG, PLOT, SNIPPET, SUMMARY_HTML, SUMMARY_MD
from inferd.tune.settings import TuneSettings
from inferd.tune.space import Candidate
from inferd.tune.state import SETTINGS_FILE, TRIALS_FILE
from inferd.tune.trial import LoadSteps, TrialPlan
from inferd.tune.tuner import INTERRUPTED, tune

Again = Callable[[Candidate, int, Measurement], float]
"""A confirmation step's p99: the candidate, the clients, and what its search trial measured."""


def holds(candidate: Candidate, clients: int, trial: Measurement) -> float:
    return trial.p99_ms


class FakeTrials:
    """Answers search trials from a surface, and confirmations step by step: p99 from
    ``again``, throughput in proportion to the clients. Raises KeyboardInterrupt at trial
    ``interrupt_at``."""

    def __init__(
        self, surface: Surface, interrupt_at: int | None = None, again: Again = holds
    ) -> None:
        self.surface = surface
        self.interrupt_at = interrupt_at
        self.again = again
        self.numbers: list[int] = []
        self.confirmations: list[tuple[Candidate, tuple[int, ...], float, float]] = []
        """Each confirmation's candidate, loads measured, step and warm-up seconds."""

    def __call__(
        self, plan: TrialPlan, candidate: Candidate, number: int, steps: LoadSteps
    ) -> Measurement:
        if number == self.interrupt_at:
            raise KeyboardInterrupt
        self.numbers.append(number)
        measured: Measurement = self.surface(candidate)
        if not isinstance(steps, StepDown):
            return measured

        def step(c: int) -> LoadPoint:
            throughput = measured.throughput * c / measured.concurrency
            return LoadPoint(c, throughput, self.again(candidate, c, measured), num_ok=100)

        again = run_steps(steps, step, measured.memory_mb)
        loads = tuple(p.concurrency for p in again.points)
        self.confirmations.append((candidate, loads, plan.load.step_s, plan.load.warmup_s))
        return again


def settings(model: Path, out: Path, **overrides: object) -> TuneSettings:
    values: dict[str, Any] = {
        "model_path": model,
        "slo_p99_ms": 50.0,
        "out": out,
        "max_replicas": 3,
        "max_batch_size": 64,
        "delays_ms": (0.0, 2.0),
        "calibrate": False,
        "price_per_hour": 3.6,
        "confirm": 0,
        "headroom": 0.0,  # the surface's figures are exact: its p99 reaches the target
    }
    values.update(overrides)
    return TuneSettings(**values)


def test_writes_the_report_folder(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    outcome = tune(settings(echo_model, out), FakeTrials(Surface()))
    assert outcome.status == "finished"
    assert outcome.best is not None
    for name in (SUMMARY_MD, SUMMARY_HTML, SNIPPET, FULL_CONFIG, PLOT, TRIALS_FILE, SETTINGS_FILE):
        assert (out / name).is_file(), name
    assert (out / PLOT).read_bytes().startswith(b"\x89PNG")
    best = outcome.best.candidate
    snippet = tomllib.loads((out / SNIPPET).read_text())
    assert snippet == {
        "instances": best["instances"],
        "batching": {
            "max_batch_size": best["max_batch_size"],
            "max_queue_delay_ms": best["max_queue_delay_ms"],
        },
    }
    full = tomllib.loads((out / FULL_CONFIG).read_text())
    assert full["instances"] == best["instances"] and full["entry_point"] == "model.py:Echo"
    lines = (out / TRIALS_FILE).read_text().splitlines()
    assert len(lines) == len(outcome.trials)
    summary = (out / SUMMARY_MD).read_text()
    assert best.key() in summary
    assert f"![{PLOT}]({PLOT})" in summary
    # cost per 1M = 3.6 * replicas / 3600 / throughput * 1e6 = 1000 * replicas / throughput
    m = outcome.best.measurement
    assert f"{1000 * best.replicas() / m.throughput:.4g}" in summary
    assert "<table>" in (out / SUMMARY_HTML).read_text()


def test_an_interrupted_run_writes_its_report_and_resumes_where_it_stopped(
    echo_model: Path, tmp_path: Path
) -> None:
    reference = tune(settings(echo_model, tmp_path / "whole"), FakeTrials(Surface()))
    out = tmp_path / "report"
    first = FakeTrials(Surface(), interrupt_at=4)
    stopped = tune(settings(echo_model, out), first)
    assert stopped.status == INTERRUPTED
    assert first.numbers == [1, 2, 3]
    assert len((out / TRIALS_FILE).read_text().splitlines()) == 3
    assert (out / SUMMARY_MD).is_file() and "interrupted" in (out / SUMMARY_MD).read_text()

    second = FakeTrials(Surface())
    resumed = tune(settings(echo_model, out), second)
    assert second.numbers[0] == 4  # trials 1-3 were read back, not run again
    assert resumed.status == "finished"
    assert [t.candidate for _, t in resumed.trials] == [t.candidate for _, t in reference.trials]
    assert resumed.best == reference.best


def test_rerunning_a_finished_folder_runs_nothing(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    first = tune(settings(echo_model, out), FakeTrials(Surface()))
    again = FakeTrials(Surface())
    assert tune(settings(echo_model, out), again).best == first.best
    assert again.numbers == []
    # A memory budget changes the search's path; trials measured before are still reused.
    budget = FakeTrials(Surface())
    outcome = tune(settings(echo_model, out, memory_budget_mb=200.0), budget)
    assert budget.numbers == list(range(len(first.trials) + 1, len(outcome.trials) + 1))
    assert outcome.best is not None and outcome.best.measurement.memory_mb <= 200.0


def test_a_half_written_last_line_is_run_again(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    tune(settings(echo_model, out, max_trials=2), FakeTrials(Surface()))
    lines = (out / TRIALS_FILE).read_text().splitlines()
    (out / TRIALS_FILE).write_text(lines[0] + "\n" + lines[1][:40])
    again = FakeTrials(Surface())
    tune(settings(echo_model, out, max_trials=2), again)
    assert again.numbers == [2]


def test_a_folder_measured_differently_is_refused(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    tune(settings(echo_model, out, max_trials=1), FakeTrials(Surface()))
    with pytest.raises(ConfigError, match=r"tune.json: .* slo_p99_ms = 50.0, not 40.0"):
        tune(settings(echo_model, out, slo_p99_ms=40.0), FakeTrials(Surface()))
    assert json.loads((out / SETTINGS_FILE).read_text())["slo_p99_ms"] == 50.0


def test_no_feasible_configuration_reports_the_nearest(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    outcome = tune(settings(echo_model, out, slo_p99_ms=4.0), FakeTrials(Surface(slo_ms=4.0)))
    assert outcome.best is None
    assert "No trial met the target. The nearest was" in (out / SUMMARY_MD).read_text()
    assert not (out / FULL_CONFIG).exists()
    assert (out / SNIPPET).read_text().startswith("# inferd tune found no configuration")


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"slo_p99_ms": 0.0}, "--slo-p99-ms"),
        ({"max_replicas": 0}, "--max-replicas"),
        ({"delays_ms": (-1.0,)}, "--delays-ms"),
        ({"headroom": 1.0}, "--headroom"),
        ({"price_per_hour": -1.0}, "--price-per-hour"),
    ],
)
def test_settings_errors_name_the_flag(
    echo_model: Path, tmp_path: Path, overrides: dict[str, object], flag: str
) -> None:
    with pytest.raises(ConfigError, match=flag):
        settings(echo_model, tmp_path, **overrides)


def test_a_repository_needs_model_to_choose(echo_model: Path, tmp_path: Path) -> None:
    twin = echo_model.parent / "twin"
    twin.mkdir()
    (twin / "model.py").write_text((echo_model / "model.py").read_text())
    (twin / "model.toml").write_text(
        (echo_model / "model.toml").read_text().replace('name = "echo"', 'name = "twin"')
    )
    with pytest.raises(ConfigError, match="several models"):
        tune(settings(echo_model.parent, tmp_path / "r"), FakeTrials(Surface()))
    outcome = tune(
        settings(echo_model.parent, tmp_path / "r", model_name="twin", max_trials=1),
        FakeTrials(Surface()),
    )
    assert len(outcome.trials) == 1


class Lucky(FakeTrials):
    """Trial 1 measures ten times its real throughput; every measurement after is the truth."""

    def __call__(
        self, plan: TrialPlan, candidate: Candidate, number: int, steps: LoadSteps
    ) -> Measurement:
        measured = super().__call__(plan, candidate, number, steps)
        if number == 1:
            return dataclasses.replace(measured, throughput=measured.throughput * 10)
        return measured


def test_a_lucky_trial_does_not_survive_its_confirmation(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    lucky = Lucky(Surface())
    outcome = tune(settings(echo_model, out, confirm=2), lucky)
    first = outcome.trials[0][1]
    confirmed = [c for c, *_ in lucky.confirmations]
    assert confirmed[0] == first.candidate  # the lucky one was measured again...
    assert outcome.best is not None and outcome.best.candidate != first.candidate  # ...and lost
    assert confirmed == [first.candidate, outcome.best.candidate]  # the winner was confirmed
    for _, loads, step_s, warmup_s in lucky.confirmations:
        assert len(loads) == 1 and (step_s, warmup_s) == (10.0, 2.0)  # held at the first load
    lines = [json.loads(line) for line in (out / TRIALS_FILE).read_text().splitlines()]
    assert [line["key"] for line in lines if line["confirms"]] == [c.key() for c in confirmed]
    summary = (out / SUMMARY_MD).read_text()
    assert "2 confirmation(s)" in summary and "feasible, confirmed by #" in summary
    # Resumed, nothing runs again: the confirmations are read back with the trials.
    again = FakeTrials(Surface())
    assert tune(settings(echo_model, out, confirm=2), again).best == outcome.best
    assert again.numbers == []


def search_best(echo_model: Path, out: Path) -> tuple[int, Candidate, Measurement]:
    """The unconfirmed recommendation on the plain surface, and how many trials found it."""
    outcome = tune(settings(echo_model, out), FakeTrials(Surface()))
    assert outcome.best is not None and outcome.unconfirmed is None
    return len(outcome.trials), outcome.best.candidate, outcome.best.measurement


def test_an_optimistic_trial_is_recommended_at_the_load_its_confirmation_held(
    echo_model: Path, tmp_path: Path
) -> None:
    """Measured longer, every configuration breaks the target at its trial's operating load
    (p99 60 ms against 50) and meets it below (30 ms): the tuner steps the load down."""
    trials, best, trial = search_best(echo_model, tmp_path / "plain")
    out = tmp_path / "report"

    def optimistic(candidate: Candidate, clients: int, measured: Measurement) -> float:
        return 60.0 if clients >= measured.concurrency else 30.0

    fake = FakeTrials(Surface(), again=optimistic)
    outcome = tune(settings(echo_model, out, confirm=2), fake)
    assert fake.confirmations[0][:2] == (best, (trial.concurrency, fake.confirmations[0][1][1]))
    load = fake.confirmations[0][1][1]
    assert outcome.best is not None and outcome.best.candidate == best
    m = outcome.best.measurement
    assert (m.concurrency, m.p99_ms) == (load, 30.0) and 0 < load < trial.concurrency
    assert m.throughput == pytest.approx(trial.throughput * load / trial.concurrency)
    assert outcome.unconfirmed == trial
    line = json.loads((out / TRIALS_FILE).read_text().splitlines()[trials])
    assert line["confirms"] and line["key"] == best.key()
    assert line["measurement"]["concurrency"] == load  # resumable: the confirmed load is kept
    snippet = (out / SNIPPET).read_text()
    assert f"at p99 30.00 ms (target 50 ms) with {load} concurrent clients" in snippet
    assert f"confirmed by trial #{trials + 1}" in snippet
    summary = (out / SUMMARY_MD).read_text()
    assert f"{m.throughput:.1f} inferences/s at p99 30.00 ms with {load} concurrent" in summary
    assert f"measured {trial.throughput:.1f} inferences/s at p99 {trial.p99_ms:.2f} ms" in summary
    assert f"held at {load} client(s) (measured at {trial.concurrency}, {load})" in summary


def test_a_configuration_that_never_holds_falls_back_to_the_next_best(
    echo_model: Path, tmp_path: Path
) -> None:
    _, best, _ = search_best(echo_model, tmp_path / "plain")
    out = tmp_path / "report"

    def breaks_the_best(candidate: Candidate, clients: int, measured: Measurement) -> float:
        return 60.0 if candidate == best else measured.p99_ms

    fake = FakeTrials(Surface(), again=breaks_the_best)
    outcome = tune(settings(echo_model, out, confirm=2), fake)
    (first, first_loads, *_), (second, second_loads, *_) = fake.confirmations
    assert first == best and len(first_loads) == 3  # the operating load and two lower ones
    assert outcome.best is not None and outcome.best.candidate == second != best
    assert len(second_loads) == 1
    summary = (out / SUMMARY_MD).read_text()
    assert "feasible in its trial; did not hold when measured again" in summary
    assert "missed the target at" in summary


def test_nothing_is_recommended_when_no_confirmation_holds(
    echo_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    fake = FakeTrials(Surface(), again=lambda candidate, clients, measured: 80.0)
    outcome = tune(settings(echo_model, out, confirm=2, confirm_steps=1), fake)
    assert outcome.best is None
    assert [len(loads) for _, loads, *_ in fake.confirmations] == [2, 2]  # bounded both ways
    summary = (out / SUMMARY_MD).read_text()
    assert "did not hold when measured again" in summary
    assert "No configuration held the target when measured again for 10 s" in summary
    assert (out / SNIPPET).read_text().startswith("# inferd tune found no configuration")


def test_an_interrupted_confirmation_resumes_without_repeating_what_finished(
    echo_model: Path, tmp_path: Path
) -> None:
    """Interrupted at the fallback's confirmation: the resumed run reads the search trials and
    the first confirmation back, runs only the fallback's, and ends where a whole run does."""
    _, best, _ = search_best(echo_model, tmp_path / "plain")

    def breaks_the_best(candidate: Candidate, clients: int, measured: Measurement) -> float:
        return 60.0 if candidate == best else measured.p99_ms

    whole = tune(
        settings(echo_model, tmp_path / "whole", confirm=2),
        FakeTrials(Surface(), None, breaks_the_best),
    )
    fallback = len(whole.trials) + 2
    out = tmp_path / "report"
    first = FakeTrials(Surface(), interrupt_at=fallback, again=breaks_the_best)
    stopped = tune(settings(echo_model, out, confirm=2), first)
    assert stopped.status == INTERRUPTED and stopped.best is None  # the only confirmation missed
    assert first.numbers == list(range(1, fallback))
    assert "interrupted" in (out / SUMMARY_MD).read_text()

    second = FakeTrials(Surface(), again=breaks_the_best)
    resumed = tune(settings(echo_model, out, confirm=2), second)
    assert second.numbers == [fallback]
    assert resumed.best == whole.best and resumed.unconfirmed == whole.unconfirmed
    assert (out / TRIALS_FILE).read_text() == (tmp_path / "whole" / TRIALS_FILE).read_text()
