"""The search on fake measured models whose best point is known: it must find it in fewer trials
than the grid, respect the memory budget and the trial budget, and say when nothing is feasible."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from fake_server import FakeServer, LLMSurface, Surface

from inferd.tune.measurement import Measurement
from inferd.tune.ramp import Ramp
from inferd.tune.search import Objective, Trial, choose, pareto_front, search
from inferd.tune.space import Candidate, SearchSpace, llm_space, tensor_space


def grid(space: SearchSpace) -> list[Candidate]:
    names = [d.name for d in space.dimensions]
    values = [d.values for d in space.dimensions]
    return [space.candidate(dict(zip(names, p, strict=True))) for p in itertools.product(*values)]


def grid_best(space: SearchSpace, objective: Objective, model: Surface) -> Trial | None:
    return choose([Trial(c, model(c)) for c in grid(space)], objective)


@pytest.mark.parametrize(
    ("surface", "replicas"),
    [
        (Surface(), 4),
        (Surface(slo_ms=20.0, a_ms=5.0, k_ms=0.1), 4),
        (Surface(delay_gain=0.2), 3),
        (Surface(cores=4, k_ms=2.0, slo_ms=200.0), 6),
    ],
    ids=["default", "tight-target", "delay-helps", "four-cores"],
)
def test_finds_the_grid_best_in_fewer_trials(surface: Surface, replicas: int) -> None:
    space = tensor_space(replicas, 256, (0.0, 1.0, 2.0, 5.0))
    objective = Objective(surface.slo_ms)
    expected = grid_best(space, objective, Surface(**_params(surface)))
    result = search(space, objective, surface)
    assert expected is not None and result.best is not None
    assert result.best.candidate == expected.candidate
    assert result.best.measurement.p99_ms <= surface.slo_ms
    assert result.complete
    assert len(result.trials) == len(set(surface.calls))  # no candidate measured twice
    assert len(result.trials) < result.grid_size / 3
    per_count = Counter(t.candidate.replicas() for t in result.trials)
    assert per_count[2] < per_count[1]  # later counts climb from the previous best


def _params(surface: Surface) -> dict[str, float]:
    keys = ("slo_ms", "a_ms", "k_ms", "cores", "delay_gain", "replica_mb")
    return {k: getattr(surface, k) for k in keys}


def test_delay_is_chosen_only_when_it_pays() -> None:
    space = tensor_space(2, 256, (0.0, 1.0, 2.0, 5.0))
    plain = search(space, Objective(50.0), Surface())
    likes_full = search(space, Objective(50.0), Surface(delay_gain=0.2))
    assert plain.best is not None and plain.best.candidate["max_queue_delay_ms"] == 0.0
    assert likes_full.best is not None and likes_full.best.candidate["max_queue_delay_ms"] == 2.0


def test_memory_budget_caps_the_replicas() -> None:
    surface = Surface(cores=4)
    space = tensor_space(4, 256, (0.0, 1.0))
    objective = Objective(50.0, memory_budget_mb=300.0)  # 50 + 100 per replica + 0.1 per row
    result = search(space, objective, surface)
    assert result.best is not None
    assert result.best.candidate.replicas() == 2
    assert result.best.measurement.memory_mb <= 300.0
    assert max(c.replicas() for c in surface.calls) == 3  # stopped at the first too-large count
    expected = grid_best(space, objective, Surface(cores=4))
    assert expected is not None and result.best.candidate == expected.candidate


def test_stops_adding_replicas_when_they_add_no_throughput() -> None:
    surface = Surface(cores=1)
    result = search(tensor_space(8, 256, (0.0,)), Objective(50.0), surface)
    assert result.best is not None and result.best.candidate.replicas() == 1
    assert max(c.replicas() for c in surface.calls) == 2


def test_no_feasible_configuration_is_reported_as_none_after_few_trials() -> None:
    surface = Surface(slo_ms=4.0)  # one row alone takes 2.5 ms, twice that breaks 4 ms
    result = search(tensor_space(4, 256, (0.0, 1.0)), Objective(4.0), surface)
    assert result.best is None
    assert result.complete
    assert {c.replicas() for c in surface.calls} == {1, 2}  # two counts in a row miss: stop
    assert len(surface.calls) < 10


def test_a_count_that_misses_gets_one_more_count_to_try() -> None:
    """One replica with all the cores misses the target (think: threads fighting the load
    generator); two replicas of one thread each meet it."""

    def model(candidate: Candidate) -> Measurement:
        if candidate.replicas() == 1:
            return Measurement(0.0, 80.0, 100.0)
        rows = int(candidate["max_batch_size"])
        return Measurement(100.0 * min(rows, 8), 30.0, 200.0, concurrency=rows)

    result = search(tensor_space(3, 64, (0.0,)), Objective(50.0), model)
    assert result.best is not None
    assert result.best.candidate.replicas() == 2
    assert result.best.candidate["max_batch_size"] == 8


def test_trial_budget_stops_the_search_with_what_it_has() -> None:
    surface = Surface()
    result = search(tensor_space(4, 256), Objective(50.0), surface, max_trials=3)
    assert not result.complete
    assert len(result.trials) == len(surface.calls) == 3
    assert result.best is not None  # the best of the three


def test_search_is_deterministic_so_a_rerun_replays_the_same_trials() -> None:
    first, second = Surface(), Surface()
    space = tensor_space(3, 128)
    search(space, Objective(50.0), first)
    search(space, Objective(50.0), second)
    assert first.calls == second.calls


def test_ramp_and_search_on_a_fake_batching_server() -> None:
    """The trial's concurrency ramp and the search together, against a fake server's steps."""
    server, ramp = FakeServer(), Ramp(slo_p99_ms=40.0, max_concurrency=256, headroom=0.0)
    space = tensor_space(3, 128, (0.0, 2.0, 5.0))
    objective = Objective(40.0)
    result = search(space, objective, lambda c: server.measure(ramp, c))
    reference = FakeServer()
    everything = [Trial(c, reference.measure(ramp, c)) for c in grid(space)]
    expected = choose(everything, objective)
    assert result.best is not None and expected is not None
    assert result.best.candidate.replicas() == expected.candidate.replicas() == 2
    best, top = result.best.measurement.throughput, expected.measurement.throughput
    assert best * (1 + objective.tie) >= top  # the grid's best, within the noise tolerance
    assert result.best.candidate["max_queue_delay_ms"] == 0.0
    assert result.best.measurement.p99_ms <= 40.0
    assert len(result.trials) < len(everything) / 3
    assert server.steps < reference.steps / 3


def test_choose_prefers_fewer_replicas_within_the_noise() -> None:
    space = tensor_space(2, 4, (0.0,))
    one = Trial(space.candidate({"instances": 1, "max_batch_size": 4, "max_queue_delay_ms": 0}),
                Measurement(1000.0, 10.0, 100.0, 4))  # fmt: skip
    two = Trial(space.candidate({"instances": 2, "max_batch_size": 4, "max_queue_delay_ms": 0}),
                Measurement(1020.0, 9.0, 200.0, 8))  # fmt: skip
    slow = Trial(space.candidate({"instances": 2, "max_batch_size": 1, "max_queue_delay_ms": 0}),
                 Measurement(5000.0, 90.0, 200.0, 8))  # fmt: skip
    assert choose([two, one, slow], Objective(50.0)) == one
    assert choose([two, one], Objective(50.0, tie=0.0)) == two


def test_pareto_front_keeps_points_no_other_beats_on_both() -> None:
    points = [(100.0, 5.0), (200.0, 8.0), (150.0, 9.0), (300.0, 20.0), (250.0, 30.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_llm_space_finds_the_grid_best_token_budget_and_sequences() -> None:
    surface = LLMSurface()
    space = llm_space(256, (128, 256, 512, 1024, 2048, 4096))
    assert [d.toml_key for d in space.dimensions] == [
        "llm.max_num_batched_tokens",
        "llm.max_num_seqs",
    ]
    objective = Objective(surface.slo_ms)
    expected = choose([Trial(c, LLMSurface()(c)) for c in grid(space)], objective)
    result = search(space, objective, surface)
    assert expected is not None and result.best is not None
    assert result.best.candidate == expected.candidate
    assert result.best.candidate.replicas() == 1  # one engine per server: priced as one
    assert len(result.trials) < result.grid_size / 2
