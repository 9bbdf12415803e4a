"""The thin loop around the pure autoscaling policy: observe, ``decide``, apply, log.

Every tick (and at once when a request finds a model scaled to zero) it builds an
``AutoscaleContext`` from the model's live counts, asks ``autoscaler.decide``, and moves the
pool to the decided size. Each change is logged with its reason and counted in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from inferd.clock import Clock, MonotonicClock
from inferd.config import AutoscalingConfig
from inferd.replicas.autoscaler import AutoscaleConfig, AutoscaleContext, AutoscaleState, decide
from inferd.replicas.served_model import ServedModel

logger = logging.getLogger("inferd.autoscaler")

# The policy's reasons, folded into the metric's bounded label set.
_METRIC_REASONS = {
    "cold_start": "cold_start", "below_min": "bounds", "above_max": "bounds",
    "over_target": "load", "under_target": "load", "slo_missed": "slo",
    "idle_scale_to_zero": "idle",
}  # fmt: skip


def policy_config(raw: AutoscalingConfig) -> AutoscaleConfig:
    """The policy's view of a model's ``[autoscaling]`` table."""
    config = AutoscaleConfig(
        min_replicas=raw.min_replicas,
        max_replicas=raw.max_replicas,
        target_ongoing_requests=raw.target_ongoing_requests,
        upscale_delay_s=raw.upscale_delay_s,
        downscale_delay_s=raw.downscale_delay_s,
        scale_to_zero_after_s=raw.scale_to_zero_after_s,
    )
    config.validate()
    return config


class ScalingLoop:
    """Keeps one model's replica count where the policy wants it."""

    def __init__(
        self,
        model: ServedModel,
        config: AutoscaleConfig,
        tick_s: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.tick_s = tick_s
        self._clock = clock or MonotonicClock()
        self._state = AutoscaleState()

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.model.cold_start_needed.wait(), self.tick_s)
            self.model.cold_start_needed.clear()
            try:
                await self.tick()
            except Exception:  # a failed tick must not stop scaling for good
                logger.exception("model %r: autoscaling tick failed", self.model.name)

    def context(self) -> AutoscaleContext:
        """What the policy sees now."""
        model, pool, batcher = self.model, self.model.pool, self.model.batcher
        assert pool is not None and batcher is not None
        target = model.metrics.slo_target_s
        return AutoscaleContext(
            now=self._clock.now(),
            current_replicas=pool.current,
            ongoing_requests=model.ongoing,
            queued_requests=batcher.queued_requests,
            last_request_at=model.last_request_at,
            slo_attainment=model.metrics.slo_attainment() if target else None,
            slo_target=0.99 if target else None,
        )

    async def tick(self) -> None:
        """One observe-decide-apply step."""
        pool = self.model.pool
        assert pool is not None
        decision, self._state = decide(self.config, self.context(), self._state)
        self.model.desired_replicas = decision.target_replicas
        self.model.metrics.set_replicas(pool.current, decision.target_replicas)
        if decision.target_replicas == pool.current:
            return
        logger.info(
            "model %r: scaling %s from %d to %d replicas (%s)",
            self.model.name,
            decision.direction,
            pool.current,
            decision.target_replicas,
            decision.reason,
        )
        reason = _METRIC_REASONS[decision.reason]
        self.model.metrics.on_scaling_decision(decision.direction, reason)
        await pool.scale_to(decision.target_replicas)
