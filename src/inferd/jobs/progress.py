"""Progress of a batch job: rows per second, ETA, the progress line and the final report (pure).

The speed shown is measured over the last ``window_s`` seconds, so that it follows the job
rather than its start-up; the ETA divides what is left by that speed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from inferd.clock import Clock

_BAR = 24


def duration(seconds: float) -> str:
    """``12.3s``, ``4m05s`` or ``2h07m``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressMeter:
    """Counts rows done against the total and measures the recent speed."""

    def __init__(
        self, total_rows: int | None, done_rows: int, clock: Clock, window_s: float = 10.0
    ) -> None:
        self.total_rows = total_rows
        self.done_rows = done_rows
        self.resumed_rows = done_rows
        self._clock = clock
        self._window_s = window_s
        self.started = clock.now()
        self._samples: deque[tuple[float, int]] = deque([(self.started, done_rows)])

    def add(self, rows: int) -> None:
        """``rows`` more rows are done (committed) now."""
        self.done_rows += rows
        now = self._clock.now()
        self._samples.append((now, self.done_rows))
        while len(self._samples) > 2 and self._samples[1][0] < now - self._window_s:
            self._samples.popleft()

    def rows_per_s(self) -> float:
        """Speed over the recent window (0.0 before any progress)."""
        now = self._clock.now()
        first_t, first_rows = self._samples[0]
        elapsed = now - first_t
        return (self.done_rows - first_rows) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        """Seconds left at the recent speed (inf while unknown)."""
        rate = self.rows_per_s()
        if self.total_rows is None or rate <= 0:
            return math.inf
        return max(0, self.total_rows - self.done_rows) / rate

    def line(self) -> str:
        """``[#####-----]  45.0%  450,000/1,000,000 rows  8,432 rows/s  ETA 1m05s``."""
        rate = f"{self.rows_per_s():,.0f} rows/s"
        if not self.total_rows:
            return f"{self.done_rows:,} rows  {rate}"
        share = min(1.0, self.done_rows / self.total_rows)
        filled = round(share * _BAR)
        bar = "#" * filled + "-" * (_BAR - filled)
        return (
            f"[{bar}] {share * 100:5.1f}%  {self.done_rows:,}/{self.total_rows:,} rows  "
            f"{rate}  ETA {duration(self.eta_s())}"
        )


@dataclass(frozen=True, slots=True)
class Report:
    """What a finished (or stopped) job did."""

    rows: int
    """Input rows covered: output rows plus failed rows."""
    failed: int
    run_rows: int
    """Rows this run computed (the others were committed by earlier runs)."""
    run_s: float
    """Wall time of this run, start-up included."""
    compute_s: float
    """Time from the first chunk submitted to the last committed."""
    batch_size: int
    replicas: int
    price_per_hour: float
    cost: float
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.run_rows / self.compute_s if self.compute_s > 0 else 0.0


def report_lines(report: Report, output: str, errors: str) -> list[str]:
    """The final report, one fact per line."""
    failed = f", {report.failed:,} failed (see {errors})" if report.failed else ", none failed"
    resumed = report.rows - report.run_rows
    earlier = f" ({resumed:,} rows were committed by earlier runs)" if resumed else ""
    price = (
        f"{report.cost:.4f} at {report.price_per_hour:g} per replica-hour"
        if report.price_per_hour
        else "no price set (--price-per-hour, or price_per_hour in model.toml)"
    )
    return [
        f"output       {output}",
        f"rows         {report.rows:,}{failed}",
        f"time         {duration(report.run_s)} this run{earlier}",
        f"throughput   {report.rows_per_s:,.0f} rows/s",
        f"batch size   {report.batch_size}, {report.replicas} replica(s)",
        f"cost         {price}",
        f"peak memory  {report.peak_rss_mb:,.0f} MB (this process)",
    ]


def estimate_lines(
    total_rows: int, exact: bool, rows_per_s: float, startup_s: float, price: float, replicas: int
) -> list[str]:
    """What ``--estimate`` prints: expected time and cost of the whole job."""
    seconds = startup_s + (total_rows / rows_per_s if rows_per_s > 0 else math.inf)
    cost = price * replicas * seconds / 3600.0
    about = "" if exact else "about "
    price_line = (
        f"{cost:.4f} at {price:g} per replica-hour x {replicas} replica(s)"
        if price
        else "no price set (--price-per-hour, or price_per_hour in model.toml)"
    )
    return [
        f"rows         {about}{total_rows:,}",
        f"speed        {rows_per_s:,.0f} rows/s (measured on a sample)",
        f"time         about {duration(seconds)} (start-up {duration(startup_s)} included)",
        f"cost         {price_line}",
    ]
