"""The tuner end to end on a fake measured model: report folder, resume, interrupt, refusal to
mix incomparable trials. No server runs: trials are answered by the fake ``Surface``."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fake_server import Surface

from inferd.errors import ConfigError
from inferd.tune.measurement import Measurement
from inferd.tune.report import FULL_CONFIG, PLOT, SNIPPET, SUMMARY_HTML, SUMMARY_MD
from inferd.tune.settings import TuneSettings
from inferd.tune.space import Candidate
from inferd.tune.state import SETTINGS_FILE, TRIALS_FILE
from inferd.tune.trial import TrialPlan
from inferd.tune.tuner import INTERRUPTED, tune


class FakeTrials:
    """Answers trials from a surface; raises KeyboardInterrupt at trial ``interrupt_at``."""

    def __init__(self, surface: Surface, interrupt_at: int | None = None) -> None:
        self.surface = surface
        self.interrupt_at = interrupt_at
        self.numbers: list[int] = []

    def __call__(
        self, plan: TrialPlan, candidate: Candidate, number: int, start: int
    ) -> Measurement:
        if number == self.interrupt_at:
            raise KeyboardInterrupt
        self.numbers.append(number)
        measured: Measurement = self.surface(candidate)
        return measured


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
    """Trial 1 measures ten times its real throughput; every measurement after is the truth,
    and a candidate measured again (a confirmation) gets ``again_p99_ms`` if that is set."""

    def __init__(self, surface: Surface, again_p99_ms: float | None = None) -> None:
        super().__init__(surface)
        self.seen: list[Candidate] = []
        self.again_p99_ms = again_p99_ms
        self.confirmations: list[tuple[float, int, int]] = []

    def __call__(
        self, plan: TrialPlan, candidate: Candidate, number: int, start: int
    ) -> Measurement:
        measured = super().__call__(plan, candidate, number, start)
        again = candidate in self.seen
        self.seen.append(candidate)
        if again and self.again_p99_ms is not None:
            return dataclasses.replace(measured, p99_ms=self.again_p99_ms)
        if number == 1:
            return dataclasses.replace(measured, throughput=measured.throughput * 10)
        return measured


def test_a_lucky_trial_does_not_survive_its_confirmation(echo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    lucky = Lucky(Surface())
    outcome = tune(settings(echo_model, out, confirm=2), lucky)
    first = lucky.seen[0]
    assert lucky.seen.count(first) == 2  # the lucky one was measured again...
    assert outcome.best is not None and outcome.best.candidate != first  # ...and lost
    assert lucky.seen.count(outcome.best.candidate) == 2  # the winner was confirmed too
    for step_s, max_concurrency, start in lucky.confirmations:
        assert step_s == 10.0 and max_concurrency == start
    lines = [json.loads(line) for line in (out / TRIALS_FILE).read_text().splitlines()]
    assert [line["key"] for line in lines if line["confirms"]] == [
        first.key(),
        outcome.best.candidate.key(),
    ]
    summary = (out / SUMMARY_MD).read_text()
    assert "2 confirmation(s)" in summary and "feasible, confirmed by #" in summary
    # Resumed, nothing runs again: the confirmations are read back with the trials.
    again = FakeTrials(Surface())
    assert tune(settings(echo_model, out, confirm=2), again).best == outcome.best
    assert again.numbers == []


def test_nothing_is_recommended_when_no_confirmation_holds(
    echo_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    outcome = tune(settings(echo_model, out, confirm=2), Lucky(Surface(), again_p99_ms=80.0))
    assert outcome.best is None
    summary = (out / SUMMARY_MD).read_text()
    assert "did not hold when measured again" in summary
    assert "Only a configuration that met it when measured again is recommended." in summary
