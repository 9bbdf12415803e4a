"""What a trial measures, and what it costs: plain values, no I/O.

A trial loads one candidate configuration at a rising closed-loop concurrency; each step is a
``LoadPoint``. Its ``Measurement`` is the *operating point*: the step with the highest
throughput whose p99 met the target, with the server's memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

SECONDS_PER_HOUR: Final = 3600.0


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One load step: the closed-loop concurrency and what the clients saw."""

    concurrency: int
    throughput: float
    """Inferences (rows answered) per second."""
    p99_ms: float
    p50_ms: float = 0.0
    num_ok: int = 0
    num_errors: int = 0
    warnings: tuple[str, ...] = ()
    """What the load generator said about its own limits (e.g. that it saturated a CPU)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data: dict[str, Any] = {
            "concurrency": self.concurrency,
            "throughput": self.throughput,
            "p99_ms": _finite(self.p99_ms),
            "p50_ms": _finite(self.p50_ms),
            "num_ok": self.num_ok,
            "num_errors": self.num_errors,
        }
        if self.warnings:
            data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadPoint:
        """The inverse of ``to_json``."""
        return cls(
            concurrency=int(data["concurrency"]),
            throughput=float(data["throughput"]),
            p99_ms=_number(data["p99_ms"]),
            p50_ms=_number(data.get("p50_ms", 0.0)),
            num_ok=int(data.get("num_ok", 0)),
            num_errors=int(data.get("num_errors", 0)),
            warnings=tuple(data.get("warnings", ())),
        )


@dataclass(frozen=True, slots=True)
class Measurement:
    """A trial's outcome: its operating point (if any step met the target) and its memory."""

    throughput: float
    """Inferences per second at the operating point; 0 when no step met the target."""
    p99_ms: float
    """p99 at the operating point; when no step met the target, at the lightest load."""
    memory_mb: float
    """Proportional set size of the server and its replica processes, MiB."""
    concurrency: int = 0
    """The operating point's closed-loop concurrency; 0 when no step met the target."""
    points: tuple[LoadPoint, ...] = field(default_factory=tuple)
    error: str | None = None
    """Why the trial failed (the server did not start, requests failed); None if it ran."""
    warnings: tuple[str, ...] = ()
    """The load generator's warnings over all steps, each once."""

    @property
    def meets_slo(self) -> bool:
        """Whether some load step met the target (the operating point exists)."""
        return self.error is None and self.concurrency > 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the trials file's ``measurement``)."""
        return {
            "throughput": self.throughput,
            "p99_ms": _finite(self.p99_ms),
            "memory_mb": self.memory_mb,
            "concurrency": self.concurrency,
            "points": [p.to_json() for p in self.points],
            "error": self.error,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of ``to_json``."""
        return cls(
            throughput=float(data["throughput"]),
            p99_ms=_number(data.get("p99_ms")),
            memory_mb=float(data["memory_mb"]),
            concurrency=int(data.get("concurrency", 0)),
            points=tuple(LoadPoint.from_json(p) for p in data.get("points", [])),
            error=data.get("error"),
            warnings=tuple(data.get("warnings", ())),
        )


def _finite(value: float) -> float | None:
    """JSON has no infinity or NaN: an unmeasured latency is written as null."""
    return value if math.isfinite(value) else None


def _number(value: Any) -> float:
    """The inverse of ``_finite``: null reads back as infinity (never measured)."""
    return math.inf if value is None else float(value)


def cost_per_million(price_per_hour: float, replicas: int, throughput: float) -> float | None:
    """``price_per_hour * replicas / 3600 / throughput * 1e6``: the bill for 1M inferences at
    this throughput; None without throughput (nothing met the target)."""
    if throughput <= 0:
        return None
    return price_per_hour * replicas * 1e6 / (SECONDS_PER_HOUR * throughput)
