"""``inferd tune``'s settings: one frozen dataclass, validated once, errors naming the flag."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from inferd.config import ModelConfig, usable_cpus
from inferd.errors import ConfigError
from inferd.tune.space import DEFAULT_DELAYS_MS, DEFAULT_TOKEN_BUDGETS
from inferd.tune.trial import LoadSettings

METRICS: Final = ("latency", "ttft", "itl")


@dataclass(frozen=True, slots=True)
class TuneSettings:
    """What to tune, against which target, within which budgets. Validated once."""

    model_path: Path
    slo_p99_ms: float
    out: Path
    model_name: str | None = None
    memory_budget_mb: float | None = None
    price_per_hour: float | None = None
    max_trials: int | None = 30
    max_replicas: int = field(default_factory=usable_cpus)
    max_batch_size: int = 256
    delays_ms: tuple[float, ...] = DEFAULT_DELAYS_MS
    max_concurrency: int = 64
    headroom: float = 0.1
    confirm: int = 2
    """Configurations measured again at most (the best, then the next best when one does not
    hold); only a configuration that met the target twice is recommended. 0: never."""
    confirm_s: float = 10.0
    """Measured seconds per confirmation step: as long as an ``inferd bench`` run by default
    (the check a user runs next), since a longer window is likelier to catch slow moments."""
    confirm_steps: int = 2
    """Lower loads a confirmation tries at most when p99 misses at the operating load."""
    max_num_seqs: int = 128
    """LLMs: the most sequences decoding together tried (powers of two up to it)."""
    token_budgets: tuple[int, ...] = DEFAULT_TOKEN_BUDGETS
    """LLMs: the token budgets per engine step tried."""
    slo_metric: str | None = None
    """Whose p99 the target bounds: latency, or for LLMs ttft (the default) or itl."""
    load: LoadSettings = field(default_factory=LoadSettings)
    """How load is applied (``api`` and ``metric`` are set from the model and ``slo_metric``)."""
    server_config: Path | None = None
    calibrate: bool = True
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        _positive("--slo-p99-ms", self.slo_p99_ms)
        _positive("--step-s", self.load.step_s)
        _positive("--confirm-s", self.confirm_s)
        if self.memory_budget_mb is not None:
            _positive("--memory-budget-mb", self.memory_budget_mb)
        if self.price_per_hour is not None and not self.price_per_hour >= 0:
            raise ConfigError(f"--price-per-hour {self.price_per_hour}: expected a price >= 0")
        for flag, count, minimum in (
            ("--confirm", self.confirm, 0),
            ("--confirm-steps", self.confirm_steps, 0),
            ("--max-trials", self.max_trials or 1, 1),
            ("--max-replicas", self.max_replicas, 1),
            ("--max-batch-size", self.max_batch_size, 1),
            ("--max-concurrency", self.max_concurrency, 1),
            ("--rows", self.load.rows, 1),
            ("--bench-processes", self.load.processes, 1),
        ):
            if count < minimum:
                raise ConfigError(f"{flag} {count}: expected an integer >= {minimum}")
        if not self.delays_ms or min(self.delays_ms) < 0:
            raise ConfigError(f"--delays-ms {list(self.delays_ms)}: expected delays >= 0")
        if self.slo_metric not in (None, *METRICS):
            raise ConfigError(f"--slo-metric {self.slo_metric}: expected one of {METRICS}")
        if self.max_num_seqs < 1 or not self.token_budgets or min(self.token_budgets) < 1:
            raise ConfigError("--max-num-seqs and --token-budgets: expected integers >= 1")
        self._check_fractions()

    def _check_fractions(self) -> None:
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"--headroom {self.headroom}: expected 0 <= headroom < 1")
        if self.load.warmup_s < 0:
            raise ConfigError(f"--warmup-s {self.load.warmup_s}: expected seconds >= 0")

    def fingerprint(self, model: ModelConfig) -> dict[str, Any]:
        """What makes two runs' trials comparable (checked when a folder is resumed)."""
        return {
            "model": model.name,
            "model_path": str(model.path.resolve()),
            "slo_p99_ms": self.slo_p99_ms,
            "headroom": self.headroom,
            "max_concurrency": self.max_concurrency,
            **{f"load.{k}": v for k, v in dataclasses.asdict(self.load).items()},
            "server_config": str(self.server_config) if self.server_config else None,
        }


def _positive(flag: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{flag} {value}: expected a number > 0")
