"""All models of the server: loading them, finding them, scaling them, stopping them.

A model that fails to load is kept, marked UNAVAILABLE with its error, so that the others are
served and the broken one answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from inferd.config import ServerConfig
from inferd.errors import InferdError, InvalidRequest, NotFound
from inferd.metrics.registry import ServerMetrics
from inferd.replicas.process_replica import preload
from inferd.replicas.scaling import ScalingLoop, policy_config
from inferd.replicas.served_llm import ServedLLM
from inferd.replicas.served_model import ModelState, RequestOptions, ServedModel
from inferd.repository import ModelEntry

__all__ = ["ModelManager", "ModelState", "RequestOptions", "ServedLLM", "ServedModel"]

logger = logging.getLogger("inferd.models")

# What replica processes of each backend import; the fork server loads them once for all.
_BACKEND_MODULES = {
    "torch": "inferd.backends.torch_backend",
    "onnx": "inferd.backends.onnx_backend",
    "sklearn": "inferd.backends.sklearn_backend",
}


class ModelManager:
    """Every model of the server, by name."""

    def __init__(self, entries: Sequence[ModelEntry], server: ServerConfig | None = None) -> None:
        self.metrics = ServerMetrics()
        default_price = server.price_per_hour if server else 0.0
        self._models: dict[str, ServedModel] = {}
        self._llms: dict[str, ServedLLM] = {}
        for e in entries:
            if e.config is not None and e.config.backend == "llm":
                price = e.config.price_per_hour
                llm_metrics = self.metrics.llm(e.name, price_per_hour=price or default_price)
                self._llms[e.name] = ServedLLM(e.name, e.config, llm_metrics)
                continue
            price = (
                e.config.price_per_hour
                if e.config and e.config.price_per_hour is not None
                else default_price
            )
            slo = (
                e.config.batching.slo_p99_ms / 1e3
                if e.config and e.config.batching.slo_p99_ms
                else None
            )
            metrics = self.metrics.model(e.name, slo_target_s=slo, price_per_hour=price)
            self._models[e.name] = ServedModel(e.name, e.config, metrics, e.error)
        self._scaling: list[asyncio.Task[None]] = []
        self.loaded = False

    @property
    def models(self) -> list[ServedModel]:
        """Every model, ready or not, in name order."""
        return [self._models[name] for name in sorted(self._models)]

    @property
    def llms(self) -> list[ServedLLM]:
        """Every LLM, ready or not, in name order."""
        return [self._llms[name] for name in sorted(self._llms)]

    @property
    def ready(self) -> bool:
        """Loading has finished and at least one model serves."""
        ready = [m.ready for m in self._models.values()] + [m.ready for m in self._llms.values()]
        return self.loaded and any(ready)

    def get_llm(self, name: str) -> ServedLLM:
        """The LLM called ``name``; ``NotFound`` naming the available LLMs otherwise."""
        llm = self._llms.get(name)
        if llm is not None:
            return llm
        available = ", ".join(sorted(self._llms)) or "none"
        if name in self._models:
            raise NotFound(
                f"model {name!r} is a tensor model, served at /v2/models/{name}/infer; "
                f"the LLMs here are: {available}"
            )
        raise NotFound(f"the model {name!r} does not exist; available LLMs: {available}")

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model called ``name``; ``NotFound`` naming the available ones otherwise."""
        model = self._models.get(name)
        if model is None and name in self._llms:
            raise InvalidRequest(
                f"model {name!r} is an LLM: use /v1/completions or /v1/chat/completions"
            )
        if model is None:
            available = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"unknown model {name!r}; available models: {available}")
        if version is not None and version != model.version:
            raise NotFound(
                f"model {name!r} has no version {version!r}; available versions: {model.version}"
            )
        return model

    async def load(self) -> None:
        """Load every model (concurrently: each loads in replica processes of its own)."""
        backends = {m.config.backend for m in self._models.values() if m.config}
        preload([_BACKEND_MODULES[b] for b in sorted(backends) if b in _BACKEND_MODULES])
        await asyncio.gather(
            *(self._load(m) for m in self._models.values()),
            *(self._load_llm(m) for m in self._llms.values()),
        )
        self.loaded = True

    async def _load(self, model: ServedModel) -> None:
        if model.state is not ModelState.LOADING:
            logger.error("model %r is not available: %s", model.name, model.error)
            return
        try:
            await model.load()
        except InferdError as e:
            model.state, model.error = ModelState.UNAVAILABLE, e.message
            logger.error("model %r failed to load: %s", model.name, e.message)
            return
        except Exception as e:  # a broken model file must not stop the others
            model.state, model.error = ModelState.UNAVAILABLE, f"{type(e).__name__}: {e}"
            logger.exception("model %r failed to load", model.name)
            return
        assert model.config is not None
        if model.config.autoscaling is not None:
            loop = ScalingLoop(model, policy_config(model.config.autoscaling))
            self._scaling.append(asyncio.get_running_loop().create_task(loop.run()))

    async def _load_llm(self, llm: ServedLLM) -> None:
        try:
            await llm.load()
        except InferdError as e:
            llm.state, llm.error = ModelState.UNAVAILABLE, e.message
            logger.error("LLM %r failed to load: %s", llm.name, e.message)
        except Exception as e:  # a broken checkpoint must not stop the others
            llm.state, llm.error = ModelState.UNAVAILABLE, f"{type(e).__name__}: {e}"
            logger.exception("LLM %r failed to load", llm.name)

    async def close(self) -> None:
        """Stop autoscaling and every model."""
        for task in self._scaling:
            task.cancel()
        await asyncio.gather(*self._scaling, return_exceptions=True)
        await asyncio.gather(
            *(m.close() for m in self._models.values()),
            *(m.close() for m in self._llms.values()),
        )
