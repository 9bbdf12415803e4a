"""Confirmation on made-up trials and fake servers: a trial whose figure does not hold when
measured again steps its load down, then gives way to the next best, within its bounds."""

from __future__ import annotations

from collections.abc import Callable

from fake_server import FakeServer, run_steps

from inferd.tune.confirm import ConfirmPolicy, StepDown, confirm, recommend, step_down
from inferd.tune.measurement import LoadPoint, Measurement
from inferd.tune.ramp import Ramp
from inferd.tune.search import Objective, Trial, search
from inferd.tune.space import Candidate, tensor_space

RAMP = Ramp(slo_p99_ms=20.0, max_concurrency=64, headroom=0.0)
OBJECTIVE = Objective(20.0)
SPACE = tensor_space(2, 8, (0.0,))


def trial(batch: int, p99_by_load: dict[int, float], per_client: float = 100.0) -> Trial:
    """A trial whose ramp saw these p99s, throughput ``per_client`` x clients."""
    points = [LoadPoint(c, per_client * c, p99, num_ok=100) for c, p99 in p99_by_load.items()]
    candidate = SPACE.candidate({"instances": 1, "max_batch_size": batch, "max_queue_delay_ms": 0})
    return Trial(candidate, RAMP.measurement(points, memory_mb=100.0))


class Truth:
    """Confirmations answered from ``p99(candidate, clients)``, the p99 a longer window reads;
    records which loads each confirmation measured."""

    def __init__(self, p99: Callable[[Candidate, int], float], per_client: float = 100.0) -> None:
        self.p99 = p99
        self.per_client = per_client
        self.calls: list[tuple[Candidate, tuple[int, ...]]] = []

    def __call__(self, trial: Trial, steps: StepDown) -> Measurement:
        def step(c: int) -> LoadPoint:
            p99 = self.p99(trial.candidate, c)
            return LoadPoint(c, self.per_client * c, p99, num_ok=100)

        measured = run_steps(steps, step)
        self.calls.append((trial.candidate, tuple(p.concurrency for p in measured.points)))
        return measured


# A: operating point 8 clients (800/s, p99 12 ms). B: 4 clients (320/s). C: 2 clients (200/s).
A = trial(8, {1: 5.0, 2: 6.0, 4: 8.0, 8: 12.0, 16: 30.0})
B = trial(4, {1: 5.0, 2: 7.0, 4: 10.0, 8: 25.0}, per_client=80.0)
C = trial(2, {1: 5.0, 2: 9.0, 4: 25.0})


def test_step_down_goes_halfway_once_then_down_the_trials_own_steps() -> None:
    refined = trial(8, {1: 5.0, 2: 6.0, 4: 8.0, 8: 12.0, 16: 30.0, 12: 18.0})
    assert refined.measurement.concurrency == 12
    assert step_down(RAMP, refined.measurement, 2).loads == (12, 10, 8)
    assert step_down(RAMP, refined.measurement, 6).loads == (12, 10, 8, 4, 2, 1)
    assert step_down(RAMP, refined.measurement, 0).loads == (12,)
    started_high = trial(8, {16: 30.0, 8: 15.0})  # no step below the operating point: halve
    assert step_down(RAMP, started_high.measurement, 3).loads == (8, 6, 4, 2)
    assert step_down(RAMP, C.measurement, 5).loads == (2, 1)


def test_step_down_stops_at_the_first_step_that_holds() -> None:
    steps = StepDown(RAMP, (8, 6, 4))
    miss, hold = LoadPoint(8, 800.0, 25.0, num_ok=9), LoadPoint(6, 600.0, 15.0, num_ok=9)
    assert steps.next_concurrency([]) == 8
    assert steps.next_concurrency([miss]) == 6
    assert steps.next_concurrency([miss, hold]) is None
    assert steps.measurement([miss, hold], 1.0).concurrency == 6
    failed = LoadPoint(4, 0.0, 30.0, num_ok=9, num_errors=1)
    assert steps.next_concurrency([miss, miss, failed]) is None  # the loads are spent
    assert not steps.measurement([miss, miss, failed], 1.0).meets_slo


def test_a_confirmation_that_misses_steps_the_operating_point_down() -> None:
    """A's trial was optimistic: measured longer, 8 clients break the target, 6 hold."""
    truth = Truth(lambda cand, c: 26.0 if c > 6 else 14.0)
    confirmations = confirm([A, B, C], OBJECTIVE, truth, ConfirmPolicy(RAMP))
    assert truth.calls == [(A.candidate, (8, 6))]
    best = recommend([A, B, C], confirmations, OBJECTIVE)
    assert best is not None and best.candidate == A.candidate
    m = best.measurement
    assert (m.concurrency, m.throughput, m.p99_ms) == (6, 600.0, 14.0)  # the confirmed figures
    assert m.points == A.measurement.points + confirmations[A.candidate].points


def test_a_configuration_that_never_holds_gives_way_to_the_next_best() -> None:
    truth = Truth(lambda cand, c: 50.0 if cand == A.candidate else 10.0, per_client=80.0)
    confirmations = confirm([A, B, C], OBJECTIVE, truth, ConfirmPolicy(RAMP))
    assert truth.calls == [(A.candidate, (8, 6, 4)), (B.candidate, (4,))]
    best = recommend([A, B, C], confirmations, OBJECTIVE)
    assert best is not None and best.candidate == B.candidate
    assert (best.measurement.concurrency, best.measurement.p99_ms) == (4, 10.0)


def test_when_nothing_holds_nothing_is_recommended_within_the_bounds() -> None:
    truth = Truth(lambda cand, c: 50.0)
    policy = ConfirmPolicy(RAMP, candidates=2, steps_down=1)
    confirmations = confirm([A, B, C], OBJECTIVE, truth, policy)
    assert truth.calls == [(A.candidate, (8, 6)), (B.candidate, (4, 3))]  # C is never served
    assert recommend([A, B, C], confirmations, OBJECTIVE) is None


def test_without_confirmations_the_search_best_is_recommended_as_measured() -> None:
    truth = Truth(lambda cand, c: 50.0)
    confirmations = confirm([A, B, C], OBJECTIVE, truth, ConfirmPolicy(RAMP, candidates=0))
    assert truth.calls == [] and confirmations == {}
    assert recommend([A, B, C], confirmations, OBJECTIVE) == A


def test_a_confirmation_that_holds_below_the_runner_up_confirms_the_runner_up() -> None:
    """A holds only at 4 clients (400/s), below B's 8-client trial (720/s): B may really be
    faster, so it is confirmed too, and holds."""
    b8 = trial(4, {1: 5.0, 2: 7.0, 4: 10.0, 8: 12.0, 16: 30.0}, per_client=90.0)
    truth = Truth(lambda cand, c: 26.0 if cand == A.candidate and c > 4 else 12.0, 90.0)
    confirmations = confirm([A, b8], OBJECTIVE, truth, ConfirmPolicy(RAMP))
    assert truth.calls == [(A.candidate, (8, 6, 4)), (b8.candidate, (8,))]
    best = recommend([A, b8], confirmations, OBJECTIVE)
    assert best is not None and best.candidate == b8.candidate
    assert best.measurement.throughput == 720.0


def test_confirmation_undoes_the_winners_curse_on_a_fake_batching_server() -> None:
    """The issue's symptom: trials read p99 at 0.6 of the truth, so the search's pick misses
    the target when measured again. The confirmed pick holds, at the load it reports."""
    server, ramp = FakeServer(luck=0.6), Ramp(slo_p99_ms=40.0, max_concurrency=256)
    objective = Objective(40.0)
    result = search(
        tensor_space(3, 128, (0.0, 2.0, 5.0)), objective, lambda c: server.measure(ramp, c)
    )
    picked = result.best
    assert picked is not None
    assert server.step(picked.candidate, picked.measurement.concurrency).p99_ms > 40.0
    confirmations = confirm(result.trials, objective, server.confirm, ConfirmPolicy(ramp))
    best = recommend(result.trials, confirmations, objective)
    assert best is not None
    again = server.step(best.candidate, best.measurement.concurrency)
    assert again.p99_ms == best.measurement.p99_ms <= ramp.limit_ms
    assert again.throughput == best.measurement.throughput
    assert best.measurement.concurrency < picked.measurement.concurrency
