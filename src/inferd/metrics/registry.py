"""A server's metrics: one ``ModelMetrics`` per model and a registry of its own to render them.

Each ``ServerMetrics`` owns its ``CollectorRegistry`` (never prometheus_client's global one), so
tests and several servers in one process never collide. Nothing is pushed into the registry
per request: its one collector asks every model for its samples when ``render`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from inferd.clock import Clock, MonotonicClock
from inferd.metrics.exposition import new_exposition
from inferd.metrics.llm_metrics import LLMCollector, LLMMetrics
from inferd.metrics.model_metrics import ModelMetrics

__all__ = ["LLMMetrics", "ModelMetrics", "ServerMetrics"]


class ServerMetrics:
    """All of one server's metrics, in a registry of its own."""

    def __init__(self, clock: Clock | None = None, window_s: int = 10) -> None:
        if window_s < 1:
            raise ValueError(f"window_s = {window_s}: expected an integer >= 1 (seconds)")
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._window_s = window_s
        self._models: dict[str, ModelMetrics] = {}
        self._llms: dict[str, LLMMetrics] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_ModelsCollector(self._models))
        self.registry.register(LLMCollector(self._llms))

    def model(
        self, name: str, *, slo_target_s: float | None = None, price_per_hour: float | None = None
    ) -> ModelMetrics:
        """The metrics of model ``name``, created on the first call with the settings given then.

        A later call may repeat the settings or leave them out; different ones raise ValueError.
        """
        existing = self._models.get(name)
        if existing is None:
            existing = self._models[name] = ModelMetrics(
                name,
                self._clock,
                window_s=self._window_s,
                slo_target_s=slo_target_s,
                price_per_hour=price_per_hour or 0.0,
            )
        elif _conflicts(existing, slo_target_s, price_per_hour):
            raise ValueError(f"metrics of model {name!r} already exist with other settings")
        return existing

    def llm(self, name: str, *, price_per_hour: float = 0.0) -> LLMMetrics:
        """The metrics of LLM ``name``, created on the first call."""
        if name not in self._llms:
            self._llms[name] = LLMMetrics(
                name, self._clock, window_s=self._window_s, price_per_hour=price_per_hour
            )
        return self._llms[name]

    def models(self) -> list[ModelMetrics]:
        """Every model's metrics, in creation order."""
        return list(self._models.values())

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when ``accept`` asks for it)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def _conflicts(model: ModelMetrics, slo_target_s: float | None, price: float | None) -> bool:
    """Whether settings given explicitly differ from those the model was created with."""
    if slo_target_s is not None and slo_target_s != model.slo_target_s:
        return True
    return price is not None and price != model.cost.price_per_hour


class _ModelsCollector:
    """Builds every family from the models' state at scrape time."""

    def __init__(self, models: dict[str, ModelMetrics]) -> None:
        self._models = models

    def describe(self) -> Iterable[Metric]:
        # Names only, so that the registry refuses a second collector exporting the same ones.
        return new_exposition().families()

    def collect(self) -> Iterable[Metric]:
        out = new_exposition()
        for model in list(self._models.values()):  # a snapshot: models may be added meanwhile
            model.export(out)
        return out.families()
