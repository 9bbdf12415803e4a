"""How many replicas a model should run: a pure policy, with time passed in.

A thin loop (not here) builds an ``AutoscaleContext`` each tick, calls ``decide`` with the
``AutoscaleState`` that the previous call returned, and applies ``Decision.target_replicas``.
Nothing here sleeps, reads a clock or touches a replica, so tests drive it tick by tick with
explicit times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, get_args

from inferd.errors import ConfigError

Direction = Literal["up", "down", "hold"]
Reason = Literal[
    "cold_start",  # up from 0 at once: a request waits and no replica exists
    "below_min",  # up at once: fewer replicas than min_replicas (one lost, config changed)
    "above_max",  # down at once: more replicas than max_replicas (config changed)
    "over_target",  # up: more requests ongoing than the replicas' target, for upscale_delay_s
    "slo_missed",  # up by one: SLO attainment under its target, for upscale_delay_s
    "under_target",  # down: fewer requests than fewer replicas could hold, for downscale_delay_s
    "idle_scale_to_zero",  # 1 -> 0: min_replicas is 0 and idle for scale_to_zero_after_s
    "waiting_upscale_delay",  # hold: a scale-up is wanted, not yet for upscale_delay_s
    "waiting_downscale_delay",  # hold: a scale-down is wanted, not yet for downscale_delay_s
    "waiting_scale_to_zero",  # hold at 1: idle, not yet for scale_to_zero_after_s
    "at_max",  # hold: the load wants more, but max_replicas run
    "at_min",  # hold: the load wants fewer, but the floor (max(1, min_replicas)) runs
    "steady",  # hold: the load fits the replicas (or nothing runs and nothing waits)
]
REASONS: tuple[Reason, ...] = get_args(Reason)
"""Every reason a decision can give: a bounded set, for metrics labels."""

_FLOAT_SLACK = 1e-9  # ceil(0.3 / 0.1) is 4 in floating point; the load means 3


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    """Bounds, load target, delays and smoothing of one model's autoscaling."""

    min_replicas: int = 1
    """Fewest replicas (>= 0); 0 lets an idle model scale to zero."""
    max_replicas: int = 1
    """Most replicas (>= 1 and >= min_replicas)."""
    target_ongoing_requests: float = 2.0
    """Requests in flight or queued per replica that the policy aims for (> 0)."""
    upscale_delay_s: float = 30.0
    """How long a scale-up must be wanted without a break before it is applied (>= 0)."""
    downscale_delay_s: float = 600.0
    """How long a scale-down must be wanted without a break before it is applied (>= 0)."""
    scale_to_zero_after_s: float = 600.0
    """Idle time (no arrival, nothing ongoing) before 1 replica goes to 0; min_replicas 0 only."""
    upscaling_factor: float = 1.0
    """Share of the gap to the load's need closed by one scale-up (> 0; above 1 overshoots)."""
    downscaling_factor: float = 1.0
    """Share of the gap to the load's need closed by one scale-down (0 < f <= 1)."""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field out of bounds, and its value."""
        _check_count("min_replicas", self.min_replicas, 0, "")
        floor = max(1, self.min_replicas)
        _check_count("max_replicas", self.max_replicas, floor, " (at least 1 and min_replicas)")
        _check_number("target_ongoing_requests", self.target_ongoing_requests, _positive, "> 0")
        for name in ("upscale_delay_s", "downscale_delay_s", "scale_to_zero_after_s"):
            _check_number(name, getattr(self, name), lambda v: v >= 0, "seconds >= 0")
        _check_number("upscaling_factor", self.upscaling_factor, _positive, "> 0")
        _check_number("downscaling_factor", self.downscaling_factor, _fraction, "in (0, 1]")


def _positive(value: float) -> bool:
    return value > 0


def _fraction(value: float) -> bool:
    return 0 < value <= 1


def _check_count(name: str, value: object, low: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"autoscale: {name} = {value!r}: expected an integer >= {low}{why}")


def _check_number(name: str, value: object, ok: Callable[[float], bool], expected: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise ConfigError(f"autoscale: {name} = {value!r}: expected a number {expected}")


@dataclass(frozen=True, slots=True)
class AutoscaleContext:
    """What the loop observed at one tick."""

    now: float
    """Seconds on the loop's monotonic clock."""
    current_replicas: int
    """Replicas running or starting: the count the pool is converging to, so that a scale-up
    whose replicas are still loading is not decided twice."""
    ongoing_requests: float
    """Requests in flight plus queued for the model (a window average may be fractional)."""
    queued_requests: int = 0
    """Of those, the ones waiting for a replica (a cold start looks at these)."""
    last_request_at: float | None = None
    """When the last request arrived, on the same clock as ``now``; None: none yet."""
    slo_attainment: float | None = None
    """Share of recent requests that met their latency SLO, in [0, 1]; None: not measured."""
    slo_target: float | None = None
    """Share the model must attain. When both SLO fields are set, attainment is under target and
    requests are ongoing, the policy wants one replica more than it runs (see ``slo_missed``)."""


@dataclass(frozen=True, slots=True)
class AutoscaleState:
    """What ``decide`` remembers between ticks; the first tick gets ``AutoscaleState()``."""

    pending: Literal["up", "down"] | None = None
    """The change wanted at every tick since ``pending_since``; None: none wanted."""
    pending_since: float | None = None
    """The first tick of the unbroken run of ticks wanting ``pending``."""
    idle_since: float | None = None
    """The first tick of the unbroken run of ticks with nothing ongoing or queued."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count the loop should converge to, and why."""

    target_replicas: int
    direction: Direction
    reason: Reason


def decide(
    config: AutoscaleConfig, ctx: AutoscaleContext, state: AutoscaleState
) -> tuple[Decision, AutoscaleState]:
    """The replica count for this tick, and the state to pass to the next call.

    The load asks for ``ceil(ongoing_requests / target_ongoing_requests)`` replicas (each busy at
    its target), approached from the current count by the smoothing factors, raised to one more
    than current while the SLO is missed, and bounded to ``[max(1, min_replicas), max_replicas]``.
    Such a change is applied only once it has been wanted in the same direction at every tick for
    its delay (``upscale_delay_s``, ``downscale_delay_s``), because replicas take long to start and
    a burst is often over before they are ready; a tick wanting no change or the opposite one
    restarts the timer. Three moves skip that: a request waiting with no replica at all starts
    ``max(1, min_replicas)`` at once (cold start), a count outside ``[min, max]`` is corrected at
    once, and a single replica goes to 0 when ``min_replicas`` is 0 and the model has been idle
    (no arrival, nothing ongoing) for ``scale_to_zero_after_s``: the only way to reach zero.
    """
    state = _track_idle(ctx, state)
    immediate = _from_zero(config, ctx) or _restore_bounds(config, ctx)
    if immediate is not None:
        return immediate, _clear_pending(state)
    target, reason = _wanted(config, ctx)
    if target == ctx.current_replicas:
        return _hold(config, ctx, _clear_pending(state), reason)
    return _after_delay(config, ctx, state, target, reason)


def desired_from_load(config: AutoscaleConfig, ctx: AutoscaleContext) -> int:
    """``ceil(ongoing / target)`` replicas, approached from the current count by smoothing.

    A scale-up adds at least one replica (``upscaling_factor`` > 1 overshoots the need); a
    scale-down removes at least one and never goes below the need.
    """
    exact = ctx.ongoing_requests / config.target_ongoing_requests
    current = ctx.current_replicas
    need = _ceil(exact)
    if need > current:
        return max(current + 1, _ceil(current + config.upscaling_factor * (exact - current)))
    if need < current:
        return min(current - 1, _ceil(current + config.downscaling_factor * (exact - current)))
    return current


def slo_missed(ctx: AutoscaleContext) -> bool:
    """Attainment is measured, under its target, and there is work another replica could take."""
    if ctx.slo_attainment is None or ctx.slo_target is None:
        return False
    return ctx.slo_attainment < ctx.slo_target and ctx.ongoing_requests > 0


def bound(config: AutoscaleConfig, replicas: int) -> int:
    """``replicas`` within ``[max(1, min_replicas), max_replicas]``: load never asks for zero."""
    return min(config.max_replicas, max(1, config.min_replicas, replicas))


def _ceil(value: float) -> int:
    return math.ceil(value - _FLOAT_SLACK)


def _track_idle(ctx: AutoscaleContext, state: AutoscaleState) -> AutoscaleState:
    """Start the idle run at the first tick with nothing ongoing or queued; end it on any work."""
    if ctx.ongoing_requests > 0 or ctx.queued_requests > 0:
        return replace(state, idle_since=None)
    return replace(state, idle_since=ctx.now if state.idle_since is None else state.idle_since)


def _clear_pending(state: AutoscaleState) -> AutoscaleState:
    return replace(state, pending=None, pending_since=None)


def _from_zero(config: AutoscaleConfig, ctx: AutoscaleContext) -> Decision | None:
    """With no replica: start the floor at once if a request waits, else stay at zero."""
    if ctx.current_replicas != 0:
        return None
    if ctx.queued_requests > 0 or ctx.ongoing_requests > 0:
        return Decision(max(1, config.min_replicas), "up", "cold_start")
    if config.min_replicas == 0:
        return Decision(0, "hold", "steady")
    return None


def _restore_bounds(config: AutoscaleConfig, ctx: AutoscaleContext) -> Decision | None:
    """A count outside ``[min, max]`` (a replica lost, the config changed) is corrected at once."""
    if ctx.current_replicas < config.min_replicas:
        return Decision(config.min_replicas, "up", "below_min")
    if ctx.current_replicas > config.max_replicas:
        return Decision(config.max_replicas, "down", "above_max")
    return None


def _wanted(config: AutoscaleConfig, ctx: AutoscaleContext) -> tuple[int, Reason]:
    """The bounded count the load and the SLO ask for, and the reason it differs (or not)."""
    current = ctx.current_replicas
    load = desired_from_load(config, ctx)
    wanted = max(load, current + 1) if slo_missed(ctx) else load
    target = bound(config, wanted)
    if target > current:
        return target, "over_target" if load > current else "slo_missed"
    if target < current:
        return target, "under_target"
    if wanted != current:
        return target, "at_max" if wanted > current else "at_min"
    return target, "steady"


def _hold(
    config: AutoscaleConfig, ctx: AutoscaleContext, state: AutoscaleState, reason: Reason
) -> tuple[Decision, AutoscaleState]:
    """No load change wanted: hold, unless a lone idle replica may go to zero."""
    current = ctx.current_replicas
    if config.min_replicas == 0 and current == 1 and state.idle_since is not None:
        idle_from = state.idle_since
        if ctx.last_request_at is not None:
            idle_from = max(idle_from, ctx.last_request_at)
        if ctx.now - idle_from >= config.scale_to_zero_after_s:
            return Decision(0, "down", "idle_scale_to_zero"), state
        return Decision(1, "hold", "waiting_scale_to_zero"), state
    return Decision(current, "hold", reason), state


def _after_delay(
    config: AutoscaleConfig,
    ctx: AutoscaleContext,
    state: AutoscaleState,
    target: int,
    reason: Reason,
) -> tuple[Decision, AutoscaleState]:
    """Apply a change wanted without a break for its delay; otherwise hold and keep timing it."""
    direction: Literal["up", "down"] = "up" if target > ctx.current_replicas else "down"
    since = state.pending_since if state.pending == direction else None
    since = ctx.now if since is None else since
    delay = config.upscale_delay_s if direction == "up" else config.downscale_delay_s
    if ctx.now - since >= delay:
        return Decision(target, direction, reason), _clear_pending(state)
    waiting: Reason = "waiting_upscale_delay" if direction == "up" else "waiting_downscale_delay"
    held = Decision(ctx.current_replicas, "hold", waiting)
    return held, replace(state, pending=direction, pending_since=since)
