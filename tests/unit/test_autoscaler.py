"""The autoscaling policy, driven tick by tick with explicit times (a fake clock, no sleeps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferd.errors import ConfigError
from inferd.replicas.autoscaler import (
    REASONS,
    AutoscaleConfig,
    AutoscaleContext,
    AutoscaleState,
    Decision,
    decide,
    desired_from_load,
)


def make_config(**overrides: Any) -> AutoscaleConfig:
    values: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_ongoing_requests": 2.0,
        "upscale_delay_s": 10.0,
        "downscale_delay_s": 60.0,
        "scale_to_zero_after_s": 120.0,
    }
    config = AutoscaleConfig(**(values | overrides))
    config.validate()
    return config


@dataclass
class Loop:
    """Feeds each decision back as the next tick's replica count, as the real loop does."""

    config: AutoscaleConfig
    current: int
    state: AutoscaleState = field(default_factory=AutoscaleState)

    def tick(self, now: float, ongoing: float, **fields: Any) -> Decision:
        ctx = AutoscaleContext(
            now=now, current_replicas=self.current, ongoing_requests=ongoing, **fields
        )
        decision, self.state = decide(self.config, ctx, self.state)
        self.current = decision.target_replicas
        return decision


# --- delays ---------------------------------------------------------------------------------


def test_scale_up_waits_for_the_upscale_delay_and_not_longer() -> None:
    loop = Loop(make_config(), current=1)
    for now in range(10):  # 8 ongoing at 2 per replica: 4 wanted
        assert loop.tick(now, ongoing=8) == Decision(1, "hold", "waiting_upscale_delay"), now
    assert loop.tick(10, ongoing=8) == Decision(4, "up", "over_target")
    assert loop.tick(11, ongoing=8) == Decision(4, "hold", "steady")


def test_a_dip_resets_the_upscale_timer() -> None:
    loop = Loop(make_config(), current=1)
    for now in range(6):
        assert loop.tick(now, ongoing=8).reason == "waiting_upscale_delay"
    assert loop.tick(6, ongoing=2) == Decision(1, "hold", "steady")  # the burst paused
    for now in range(7, 17):
        assert loop.tick(now, ongoing=8).target_replicas == 1, now
    assert loop.tick(17, ongoing=8) == Decision(4, "up", "over_target")


def test_a_reversal_resets_the_upscale_timer() -> None:
    loop = Loop(make_config(), current=3)
    for now in range(6):
        loop.tick(now, ongoing=10)
    assert loop.tick(6, ongoing=0).reason == "waiting_downscale_delay"
    assert loop.tick(15, ongoing=10).reason == "waiting_upscale_delay"  # timer from 15, not 0
    assert loop.tick(24.9, ongoing=10).reason == "waiting_upscale_delay"
    assert loop.tick(25, ongoing=10) == Decision(5, "up", "over_target")


def test_the_upscale_target_follows_the_latest_load() -> None:
    loop = Loop(make_config(), current=1)
    loop.tick(0, ongoing=4)
    loop.tick(5, ongoing=20)
    assert loop.tick(10, ongoing=6) == Decision(3, "up", "over_target")


def test_scale_down_waits_for_the_downscale_delay() -> None:
    loop = Loop(make_config(), current=4)
    for now in range(0, 60, 5):
        assert loop.tick(now, ongoing=2) == Decision(4, "hold", "waiting_downscale_delay"), now
    assert loop.tick(60, ongoing=2) == Decision(1, "down", "under_target")


def test_a_spike_resets_the_downscale_timer() -> None:
    loop = Loop(make_config(), current=4)
    loop.tick(0, ongoing=2)
    loop.tick(50, ongoing=2)
    assert loop.tick(55, ongoing=8) == Decision(4, "hold", "steady")
    assert loop.tick(60, ongoing=2).reason == "waiting_downscale_delay"
    assert loop.tick(119, ongoing=2).reason == "waiting_downscale_delay"
    assert loop.tick(120, ongoing=2) == Decision(1, "down", "under_target")


def test_zero_delays_apply_at_once() -> None:
    loop = Loop(make_config(upscale_delay_s=0, downscale_delay_s=0), current=2)
    assert loop.tick(0, ongoing=9) == Decision(5, "up", "over_target")
    assert loop.tick(0, ongoing=3) == Decision(2, "down", "under_target")


def test_load_within_the_current_replicas_holds() -> None:
    loop = Loop(make_config(), current=3)
    for now, ongoing in enumerate([6, 5, 4.5, 4.01, 6]):  # needs ceil(ongoing / 2) = 3
        assert loop.tick(now, ongoing) == Decision(3, "hold", "steady")


# --- smoothing ------------------------------------------------------------------------------


def _load(config: AutoscaleConfig, current: int, ongoing: float) -> int:
    ctx = AutoscaleContext(now=0, current_replicas=current, ongoing_requests=ongoing)
    return desired_from_load(config, ctx)


def test_upscaling_factor_closes_part_of_the_gap() -> None:
    assert _load(make_config(max_replicas=100), current=2, ongoing=40) == 20
    assert _load(make_config(upscaling_factor=0.5), current=2, ongoing=40) == 11  # 2 + 18 / 2
    assert _load(make_config(upscaling_factor=0.01), current=2, ongoing=6) == 3  # at least one
    assert _load(make_config(upscaling_factor=2), current=2, ongoing=8) == 6  # overshoots


def test_downscaling_factor_closes_part_of_the_gap() -> None:
    assert _load(make_config(), current=10, ongoing=4) == 2
    assert _load(make_config(downscaling_factor=0.5), current=10, ongoing=4) == 6  # 10 - 8 / 2
    assert _load(make_config(downscaling_factor=0.01), current=10, ongoing=4) == 9  # one at least


def test_smoothing_applies_through_decide() -> None:
    loop = Loop(make_config(upscaling_factor=0.5, upscale_delay_s=0, max_replicas=100), current=2)
    assert loop.tick(0, ongoing=40) == Decision(11, "up", "over_target")
    assert loop.tick(1, ongoing=40) == Decision(16, "up", "over_target")  # 11 + 9 / 2


def test_float_targets_are_not_rounded_up_by_float_error() -> None:
    assert _load(make_config(target_ongoing_requests=0.1), current=3, ongoing=0.3) == 3
    assert _load(make_config(target_ongoing_requests=0.1), current=1, ongoing=0.3) == 3


# --- bounds ---------------------------------------------------------------------------------


def test_scale_up_stops_at_max() -> None:
    loop = Loop(make_config(max_replicas=3, upscale_delay_s=0), current=1)
    assert loop.tick(0, ongoing=100) == Decision(3, "up", "over_target")
    assert loop.tick(1, ongoing=100) == Decision(3, "hold", "at_max")


def test_scale_down_stops_at_min() -> None:
    loop = Loop(make_config(min_replicas=2, downscale_delay_s=0), current=5)
    assert loop.tick(0, ongoing=0) == Decision(2, "down", "under_target")
    assert loop.tick(1, ongoing=0) == Decision(2, "hold", "at_min")


def test_counts_outside_the_bounds_are_corrected_at_once() -> None:
    config = make_config(min_replicas=2, max_replicas=4)
    assert Loop(config, current=1).tick(0, ongoing=0) == Decision(2, "up", "below_min")
    assert Loop(config, current=7).tick(0, ongoing=100) == Decision(4, "down", "above_max")


def test_load_never_scales_to_zero_even_when_min_is_zero() -> None:
    loop = Loop(make_config(min_replicas=0, downscale_delay_s=0), current=3)
    assert loop.tick(0, ongoing=0) == Decision(1, "down", "under_target")


# --- scale to zero --------------------------------------------------------------------------


def test_scale_to_zero_after_the_idle_period() -> None:
    loop = Loop(make_config(min_replicas=0), current=1)
    for now in range(0, 120, 10):
        decision = loop.tick(now, ongoing=0, last_request_at=0.0)
        assert decision == Decision(1, "hold", "waiting_scale_to_zero"), now
    assert loop.tick(120, ongoing=0, last_request_at=0.0) == Decision(
        0, "down", "idle_scale_to_zero"
    )
    assert loop.tick(130, ongoing=0, last_request_at=0.0) == Decision(0, "hold", "steady")


def test_no_scale_to_zero_when_min_is_one() -> None:
    loop = Loop(make_config(min_replicas=1), current=1)
    for now in range(0, 1000, 100):
        assert loop.tick(now, ongoing=0, last_request_at=0.0) == Decision(1, "hold", "at_min")


def test_no_scale_to_zero_while_anything_is_ongoing() -> None:
    loop = Loop(make_config(min_replicas=0), current=1)
    for now in range(0, 1000, 100):
        assert loop.tick(now, ongoing=1, last_request_at=0.0) == Decision(1, "hold", "steady")


def test_a_recent_arrival_delays_scale_to_zero() -> None:
    loop = Loop(make_config(min_replicas=0), current=1)
    loop.tick(0, ongoing=0, last_request_at=0.0)
    # A request arrived and finished between ticks: the idle period starts from its arrival.
    assert loop.tick(150, ongoing=0, last_request_at=100.0).reason == "waiting_scale_to_zero"
    assert loop.tick(220, ongoing=0, last_request_at=100.0).reason == "idle_scale_to_zero"


def test_work_restarts_the_idle_period() -> None:
    loop = Loop(make_config(min_replicas=0), current=1)
    loop.tick(0, ongoing=0)
    loop.tick(100, ongoing=1, last_request_at=None)
    assert loop.tick(110, ongoing=0).reason == "waiting_scale_to_zero"
    assert loop.tick(229, ongoing=0).reason == "waiting_scale_to_zero"
    assert loop.tick(230, ongoing=0) == Decision(0, "down", "idle_scale_to_zero")


def test_idle_time_counts_across_a_scale_down_to_one() -> None:
    loop = Loop(make_config(min_replicas=0, downscale_delay_s=200), current=3)
    loop.tick(0, ongoing=0, last_request_at=0.0)
    assert loop.tick(200, ongoing=0, last_request_at=0.0) == Decision(1, "down", "under_target")
    assert loop.tick(201, ongoing=0, last_request_at=0.0) == Decision(
        0, "down", "idle_scale_to_zero"
    )


# --- cold start -----------------------------------------------------------------------------


def test_cold_start_from_zero_at_once() -> None:
    loop = Loop(make_config(min_replicas=0, upscale_delay_s=1000), current=0)
    assert loop.tick(0, ongoing=0) == Decision(0, "hold", "steady")
    waiting = {"queued_requests": 1, "last_request_at": 1.0}
    assert loop.tick(1, ongoing=1, **waiting) == Decision(1, "up", "cold_start")
    assert loop.tick(2, ongoing=1, **waiting) == Decision(1, "hold", "steady")


def test_cold_start_goes_to_the_minimum() -> None:
    loop = Loop(make_config(min_replicas=3), current=0)
    assert loop.tick(0, ongoing=5, queued_requests=5) == Decision(3, "up", "cold_start")


def test_cold_start_ignores_a_pending_downscale() -> None:
    loop = Loop(make_config(min_replicas=0), current=0)
    loop.state = AutoscaleState(pending="down", pending_since=0.0)
    decision = loop.tick(5, ongoing=1, queued_requests=1)
    assert decision == Decision(1, "up", "cold_start")
    assert loop.state.pending is None


# --- SLO ------------------------------------------------------------------------------------


def test_a_missed_slo_adds_a_replica_after_the_upscale_delay() -> None:
    loop = Loop(make_config(), current=2)
    missed = {"slo_attainment": 0.9, "slo_target": 0.99}
    for now in range(10):  # 3 ongoing fit in 2 replicas, but latency misses the SLO
        assert loop.tick(now, ongoing=3, **missed) == Decision(2, "hold", "waiting_upscale_delay")
    assert loop.tick(10, ongoing=3, **missed) == Decision(3, "up", "slo_missed")


def test_a_missed_slo_blocks_a_scale_down() -> None:
    loop = Loop(make_config(upscale_delay_s=0), current=4)
    decision = loop.tick(0, ongoing=1, slo_attainment=0.5, slo_target=0.99)
    assert decision == Decision(5, "up", "slo_missed")


def test_a_met_slo_changes_nothing() -> None:
    loop = Loop(make_config(upscale_delay_s=0), current=2)
    decision = loop.tick(0, ongoing=3, slo_attainment=0.995, slo_target=0.99)
    assert decision == Decision(2, "hold", "steady")


def test_a_missed_slo_with_nothing_ongoing_adds_nothing() -> None:
    loop = Loop(make_config(upscale_delay_s=0, downscale_delay_s=0), current=2)
    decision = loop.tick(0, ongoing=0, slo_attainment=0.5, slo_target=0.99)
    assert decision == Decision(1, "down", "under_target")


def test_the_slo_rule_needs_both_fields() -> None:
    loop = Loop(make_config(upscale_delay_s=0), current=2)
    assert loop.tick(0, ongoing=3, slo_attainment=0.5).reason == "steady"
    assert loop.tick(1, ongoing=3, slo_target=0.99).reason == "steady"


def test_a_missed_slo_stops_at_max() -> None:
    loop = Loop(make_config(max_replicas=2, upscale_delay_s=0), current=2)
    decision = loop.tick(0, ongoing=3, slo_attainment=0.5, slo_target=0.99)
    assert decision == Decision(2, "hold", "at_max")


def test_over_target_wins_the_reason_when_the_load_alone_scales_up() -> None:
    loop = Loop(make_config(upscale_delay_s=0), current=2)
    decision = loop.tick(0, ongoing=10, slo_attainment=0.5, slo_target=0.99)
    assert decision == Decision(5, "up", "over_target")


# --- configuration --------------------------------------------------------------------------


def test_the_default_config_is_valid() -> None:
    AutoscaleConfig().validate()


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("min_replicas", -1),
        ("min_replicas", 1.5),
        ("min_replicas", True),
        ("max_replicas", 0),
        ("max_replicas", 2),  # under min_replicas = 3 below
        ("target_ongoing_requests", 0),
        ("target_ongoing_requests", -2.0),
        ("target_ongoing_requests", math.nan),
        ("target_ongoing_requests", math.inf),
        ("upscale_delay_s", -1.0),
        ("downscale_delay_s", "5"),
        ("scale_to_zero_after_s", -0.5),
        ("upscaling_factor", 0.0),
        ("downscaling_factor", 1.5),
        ("downscaling_factor", 0),
    ],
)
def test_validation_names_the_field_and_the_value(field_name: str, value: object) -> None:
    values: dict[str, Any] = {"min_replicas": 3, "max_replicas": 5, field_name: value}
    with pytest.raises(ConfigError) as raised:
        AutoscaleConfig(**values).validate()
    message = str(raised.value)
    assert f"{field_name} = {value!r}" in message
    assert message.startswith("autoscale: ")


# --- properties -----------------------------------------------------------------------------

TARGETS = [0.5, 1.0, 2.0, 2.5, 4.0]  # exact in binary, so the oracle below compares exactly


@st.composite
def configs(draw: st.DrawFn) -> AutoscaleConfig:
    min_replicas = draw(st.sampled_from([0, 0, 1, 2, 3]))  # scale to zero needs min 0
    return make_config(
        min_replicas=min_replicas,
        max_replicas=draw(st.integers(max(1, min_replicas), 6)),
        target_ongoing_requests=draw(st.sampled_from(TARGETS)),
        upscale_delay_s=draw(st.sampled_from([0.0, 1.0, 3.0, 7.5])),
        downscale_delay_s=draw(st.sampled_from([0.0, 2.0, 6.0, 15.0])),
        scale_to_zero_after_s=draw(st.sampled_from([0.0, 4.0, 10.0])),
        upscaling_factor=draw(st.sampled_from([0.3, 1.0, 2.0])),
        downscaling_factor=draw(st.sampled_from([0.2, 0.5, 1.0])),
    )


@dataclass(frozen=True)
class Tick:
    dt: float
    ongoing: int
    queued: int
    arrival: bool
    slo_attainment: float | None
    external: int | None  # replicas lost or added behind the policy's back


def sometimes(strategy: st.SearchStrategy[int], one_in: int) -> st.SearchStrategy[int | None]:
    """``strategy``'s value once in ``one_in`` draws, else None."""
    return st.tuples(st.integers(1, one_in), strategy).map(lambda d: d[1] if d[0] == 1 else None)


ticks = st.builds(
    Tick,
    dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
    ongoing=st.one_of(st.just(0), st.integers(0, 12)),  # idle often: scale to zero is reached
    queued=st.integers(0, 3),
    arrival=st.booleans(),
    slo_attainment=st.sampled_from([None, None, 0.5, 0.999]),
    external=sometimes(st.integers(0, 7), one_in=10),
)


@dataclass(frozen=True)
class Step:
    ctx: AutoscaleContext
    decision: Decision


def simulate(config: AutoscaleConfig, start: int, plan: list[Tick]) -> list[Step]:
    loop = Loop(config, current=start)
    now, last_request_at, steps = 0.0, None, []
    for tick in plan:
        now += tick.dt
        last_request_at = now if tick.arrival else last_request_at
        if tick.external is not None:
            loop.current = tick.external
        ctx = AutoscaleContext(
            now=now,
            current_replicas=loop.current,
            ongoing_requests=tick.ongoing,
            queued_requests=min(tick.queued, tick.ongoing),
            last_request_at=last_request_at,
            slo_attainment=tick.slo_attainment,
            slo_target=0.99 if tick.slo_attainment is not None else None,
        )
        decision, loop.state = decide(config, ctx, loop.state)
        loop.current = decision.target_replicas
        steps.append(Step(ctx, decision))
    return steps


def _wants_up(config: AutoscaleConfig, ctx: AutoscaleContext) -> bool:
    over = ctx.ongoing_requests > config.target_ongoing_requests * ctx.current_replicas
    missed = ctx.slo_attainment is not None and ctx.slo_attainment < 0.99
    return (
        over or (missed and ctx.ongoing_requests > 0)
    ) and ctx.current_replicas < config.max_replicas


def _wants_down(config: AutoscaleConfig, ctx: AutoscaleContext) -> bool:
    under = ctx.ongoing_requests <= config.target_ongoing_requests * (ctx.current_replicas - 1)
    missed = (
        ctx.slo_attainment is not None and ctx.slo_attainment < 0.99 and ctx.ongoing_requests > 0
    )
    return under and not missed and ctx.current_replicas > max(1, config.min_replicas)


def _run_before(steps: list[Step], index: int, belongs: Callable[[Step], bool]) -> float:
    """``now`` at the first step of the unbroken run of steps ending at ``index``."""
    first = index
    while first > 0 and belongs(steps[first - 1]):
        first -= 1
    return steps[first].ctx.now


def _direction(current: int, target: int) -> str:
    return "up" if target > current else "down" if target < current else "hold"


@settings(max_examples=300, deadline=None)
@given(configs(), st.integers(0, 6), st.lists(ticks, min_size=5, max_size=60))
def test_targets_stay_within_bounds(config: AutoscaleConfig, start: int, plan: list[Tick]) -> None:
    for step in simulate(config, start, plan):
        decision, current = step.decision, step.ctx.current_replicas
        assert decision.reason in REASONS
        assert decision.direction == _direction(current, decision.target_replicas)
        if decision.target_replicas == 0:
            assert config.min_replicas == 0
            assert decision.reason in ("idle_scale_to_zero", "steady")
        else:
            assert config.min_replicas <= decision.target_replicas <= config.max_replicas


@settings(max_examples=300, deadline=None)
@given(configs(), st.integers(0, 6), st.lists(ticks, min_size=5, max_size=60))
def test_no_change_before_its_delay_has_elapsed_continuously(
    config: AutoscaleConfig, start: int, plan: list[Tick]
) -> None:
    steps = simulate(config, start, plan)
    for index, step in enumerate(steps):
        reason, ctx = step.decision.reason, step.ctx
        if reason in ("over_target", "slo_missed", "waiting_upscale_delay"):
            assert _wants_up(config, ctx)
        if reason in ("under_target", "waiting_downscale_delay"):
            assert _wants_down(config, ctx)
        if reason in ("over_target", "slo_missed"):
            since = _run_before(
                steps, index, lambda s: s.decision.reason == "waiting_upscale_delay"
            )
            assert ctx.now - since >= config.upscale_delay_s
        if reason == "under_target":
            since = _run_before(
                steps, index, lambda s: s.decision.reason == "waiting_downscale_delay"
            )
            assert ctx.now - since >= config.downscale_delay_s
        if reason == "idle_scale_to_zero":
            since = _run_before(steps, index, lambda s: s.ctx.ongoing_requests == 0)
            assert ctx.ongoing_requests == 0 and ctx.current_replicas == 1
            assert ctx.now - since >= config.scale_to_zero_after_s
            assert (
                ctx.last_request_at is None
                or ctx.now - ctx.last_request_at >= config.scale_to_zero_after_s
            )


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 20),
    st.floats(0.05, 50.0, allow_nan=False),
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=20),
    st.sampled_from([0.3, 1.0, 2.0]),
)
def test_steady_load_at_target_times_n_holds_n(
    replicas: int, target: float, gaps: list[float], factor: float
) -> None:
    config = make_config(
        max_replicas=20,
        target_ongoing_requests=target,
        upscale_delay_s=0,
        downscale_delay_s=0,
        upscaling_factor=factor,
        downscaling_factor=min(factor, 1.0),
    )
    loop, now = Loop(config, current=replicas), 0.0
    for gap in gaps:
        now += gap
        decision = loop.tick(now, ongoing=target * replicas, last_request_at=now)
        assert decision == Decision(replicas, "hold", "steady")
