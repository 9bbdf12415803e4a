"""What one generator process measured: raw latencies and counts, merged across processes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Samples:
    """Measured requests only (those sent after the warm-up); times are ``time.monotonic``."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    send_lag_ms: list[float] = field(default_factory=list)
    num_scheduled: int = 0
    num_warmup: int = 0
    window_start: float = 0.0
    window_end: float = 0.0
    cpu_s: float = 0.0
    wait_s: float | None = None
    wall_s: float = 0.0

    @property
    def num_ok(self) -> int:
        """Good answers."""
        return len(self.latencies_ms)

    @property
    def cpu_fraction(self) -> float:
        """This process's CPU time over its wall time in the measured window."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def wait_fraction(self) -> float | None:
        """Time spent waiting for a CPU over wall time (None where it cannot be read)."""
        if self.wait_s is None or self.wall_s <= 0:
            return None
        return self.wait_s / self.wall_s


def merge(parts: list[Samples]) -> Samples:
    """One ``Samples`` from several processes; the window spans all of theirs."""
    total = Samples(
        window_start=min(p.window_start for p in parts),
        window_end=max(p.window_end for p in parts),
    )
    for part in parts:
        total.latencies_ms += part.latencies_ms
        total.errors.update(part.errors)
        total.ttft_ms += part.ttft_ms
        total.itl_ms += part.itl_ms
        total.send_lag_ms += part.send_lag_ms
        total.output_tokens += part.output_tokens
        total.num_scheduled += part.num_scheduled
        total.num_warmup += part.num_warmup
        total.cpu_s += part.cpu_s
        if part.wait_s is not None:
            total.wait_s = (total.wait_s or 0.0) + part.wait_s
        total.wall_s += part.wall_s
    return total
