"""The SLO batching mode: the user states a p99 latency target, not a queue delay.

Pure: no I/O, no clock, no asyncio. The batcher reports what it measures (arrivals, each batch's
size and latency, each request's latency) and asks ``SloController`` how many rows the next batch
may take and how long to keep waiting for it, with time passed in as floats.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice

from inferd.errors import ConfigError

_WARMUP_BATCHES = 5  # before this many batches the fit is a guess: dispatch at once, take all
_FORGET = 0.97  # per-batch forgetting factor of the latency fit (~33 batches of memory)
_PRIOR_WEIGHT = 0.05  # row² of spread the no-amortization slope weighs: a tie-breaker only
_RESIDUAL_ALPHA = 0.1  # EWMA weight of the fit's absolute prediction error
_MARGIN_PER_RESIDUAL = 3.0  # a normal's p99 is ~2.9 mean absolute deviations above its mean
_ARRIVAL_ALPHA = 0.05  # EWMA weight of inter-arrival gaps (~20 arrivals of memory)
_MIN_GAP_S = 1e-6  # arrivals closer than this are one arrival (pieces of one request)
_MAX_UTILIZATION = 0.9  # busiest a replica may plan to be; past it queues grow without bound
_WINDOW = 512  # request latencies kept to estimate the observed p99
_ADJUST_EVERY = 64  # fresh answered requests needed before headroom changes again
_SHRINK, _GROW, _GROW_BELOW = 0.9, 1.02, 0.7
_MIN_WAIT_S = 1e-4  # a shorter sleep costs the event loop more than it can gain


@dataclass(frozen=True, slots=True)
class SloTarget:
    """A model's latency target and batch limits."""

    p99_s: float
    """The latency target: 99% of requests answered within this many seconds of arrival (> 0)."""
    max_batch_size: int
    """Hard cap on rows in one batch (>= 1)."""
    min_headroom: float = 0.3
    """Lowest fraction of the target the controller plans to use (0 < min <= max <= 1)."""
    max_headroom: float = 0.9
    """Highest fraction of the target the controller plans to use."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first out-of-bounds field."""
        if not (math.isfinite(self.p99_s) and self.p99_s > 0):
            raise ConfigError(f"slo: p99_s = {self.p99_s!r}: expected seconds > 0")
        if self.max_batch_size < 1:
            raise ConfigError(f"slo: max_batch_size = {self.max_batch_size!r}: expected >= 1")
        if not 0 < self.min_headroom <= self.max_headroom <= 1:
            raise ConfigError(
                f"slo: headroom [{self.min_headroom!r}, {self.max_headroom!r}]: "
                "expected 0 < min_headroom <= max_headroom <= 1"
            )


class _LatencyFit:
    """Batch latency L(r) = a + b·r by exponentially weighted least squares, plus a margin.

    Weighted means and co-moments are updated in Welford form (stable, O(1) per batch). When the
    batch sizes seen barely vary, the slope cannot be told from the intercept; the fit then leans
    on the no-amortization prior b = mean(L) / mean(r), a = 0, which overestimates L above the
    sizes seen. That caps batches low but never forbids the next size up, and once sizes vary
    the data outweighs the prior.
    """

    def __init__(self) -> None:
        self.batches = 0
        self._weight = self._mean_r = self._mean_y = self._crr = self._cry = 0.0
        self._abs_residual = 0.0

    def update(self, rows: int, latency_s: float) -> None:
        r, y = float(rows), max(0.0, latency_s)
        if self.batches:  # the error of a prediction made before seeing the sample: honest
            a, b = self.coefficients()
            error = abs(y - a - b * r)
            self._abs_residual += _RESIDUAL_ALPHA * (error - self._abs_residual)
        self.batches += 1
        self._weight = _FORGET * self._weight + 1.0
        dr = r - self._mean_r
        self._mean_r += dr / self._weight
        self._mean_y += (y - self._mean_y) / self._weight
        self._crr = _FORGET * self._crr + dr * (r - self._mean_r)
        self._cry = _FORGET * self._cry + dr * (y - self._mean_y)

    def coefficients(self) -> tuple[float, float]:
        """``(a, b)``: seconds per batch and seconds per row, both >= 0."""
        if not self.batches or self._mean_r <= 0:
            return 0.0, 0.0
        prior_b = self._mean_y / self._mean_r
        b = (self._cry + _PRIOR_WEIGHT * prior_b) / (max(self._crr, 0.0) + _PRIOR_WEIGHT)
        b = max(b, 0.0)
        return max(self._mean_y - b * self._mean_r, 0.0), b

    @property
    def margin(self) -> float:
        """Seconds added to a prediction so that about 99% of batches finish within it."""
        return _MARGIN_PER_RESIDUAL * self._abs_residual


class _ArrivalRate:
    """Rows per second, from EWMAs of the gaps between arrivals and of their sizes."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._gap = math.inf  # one arrival tells no rate yet
        self._rows = 0.0
        self._last_weight = 1.0  # the weight the latest arrival's rows got in ``_rows``

    def update(self, now: float, rows: int) -> None:
        if self._last is not None and now - self._last < _MIN_GAP_S:
            # Pieces of one request cut to batch size arrive together: one arrival, more rows
            # (the EWMA is linear in its latest sample, so this is exact).
            self._rows += self._last_weight * rows
            return
        if self._last is None:
            self._rows = float(rows)
        else:
            gap = now - self._last
            self._gap = (
                gap if math.isinf(self._gap) else self._gap + _ARRIVAL_ALPHA * (gap - self._gap)
            )
            self._rows += _ARRIVAL_ALPHA * (rows - self._rows)
            self._last_weight = _ARRIVAL_ALPHA
        self._last = now

    def rate(self, now: float | None = None) -> float:
        """Rows/s; given ``now``, a silence longer than the usual gap lowers it (bursts end)."""
        if self._last is None or math.isinf(self._gap):
            return 0.0
        gap = self._gap if now is None else max(self._gap, now - self._last)
        return self._rows / max(gap, _MIN_GAP_S)


class _LatencyWindow:
    """The last ``_WINDOW`` request latencies, for the observed p99."""

    def __init__(self) -> None:
        self._ring: deque[float] = deque(maxlen=_WINDOW)

    def add(self, latency_s: float) -> None:
        self._ring.append(latency_s)

    def p99(self, last: int = _WINDOW) -> float:
        """Nearest-rank p99 of the ``last`` latencies added (0.0 before any)."""
        recent = sorted(islice(reversed(self._ring), last))
        return recent[math.ceil(0.99 * len(recent)) - 1] if recent else 0.0


class SloController:
    """Chooses batch size and queue delay to maximise throughput within a p99 target T.

    Batch latency is modelled as L(r) = a + b·r, fitted online with a safety margin from the
    fit's recent errors, and arrivals by an EWMA rate λ. A request arriving while a batch runs
    waits for it and then for its own, so batches are capped at the largest r with
    L(r) + margin <= h·T/2, h being the headroom (the fraction of T we plan to use). With a
    replica free and n rows queued, waiting w more is expected to bring the oldest request to
    age + w + L(min(n + λw, max_rows)); we wait the largest w keeping that <= h·T, but not past
    the expected fill, and not at all if under one row is expected in the whole wait. Beyond
    that plan: the cap never drops below the size that keeps a replica under 90% busy at λ
    (past it queues, and every latency, grow without bound, so a smaller cap costs throughput
    and the SLO), and λ decays once a silence outlasts the usual gap (a burst that ended keeps
    no one waiting). Every 64 answers, the p99 of those since h last changed (at most 512)
    shrinks h by 10% if over T, grows it 2% if under 0.7·T; counting only fresh answers keeps
    one burst of misses from shrinking h again and again. h starts mid-bounds. Until 5 batches
    are measured: no wait, up to max_batch_size.
    """

    def __init__(self, target: SloTarget) -> None:
        self.target = target
        self._fit = _LatencyFit()
        self._arrivals = _ArrivalRate()
        self._latencies = _LatencyWindow()
        self._headroom = (target.min_headroom + target.max_headroom) / 2
        self._since_change = 0

    def on_arrival(self, now: float, rows: int) -> None:
        """Record a request of ``rows`` rows queued at ``now`` (pieces at one instant merge)."""
        self._arrivals.update(now, rows)

    def on_batch_done(self, rows: int, compute_s: float) -> None:
        """Record a finished batch: its rows and its seconds from dispatch to result."""
        self._fit.update(rows, compute_s)

    def on_request_done(self, total_s: float) -> None:
        """Record an answered request's seconds from arrival to answer."""
        self._latencies.add(total_s)
        self._since_change += 1
        if self._since_change % _ADJUST_EVERY == 0:
            self._adapt_headroom()

    def max_rows(self) -> int:
        """Rows the next batch may take, in ``[1, max_batch_size]``."""
        limit = self.target.max_batch_size
        if self._fit.batches < _WARMUP_BATCHES:
            return limit
        return min(limit, max(self._slo_rows(), self._stable_rows()))

    def take_rows(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> int:
        """Rows the batch dispatched now takes: ``max_rows()`` (the batcher's policy protocol)."""
        return self.max_rows()

    def wait_before_dispatch(
        self, pending_rows: int, oldest_arrival: float, now: float, free_since: float = -math.inf
    ) -> float:
        """Seconds to keep waiting for more rows; 0.0 means dispatch now.

        ``free_since`` is not used: the plan is made from the oldest request's true age, which
        is what its latency target counts.
        """
        limit = self.max_rows()
        if self._fit.batches < _WARMUP_BATCHES or pending_rows >= limit or pending_rows <= 0:
            return 0.0
        a, b = self._fit.coefficients()
        age = max(0.0, now - oldest_arrival)
        rate = self._arrivals.rate(now)
        # Linear while the batch fills: age + w + a + margin + b·(n + λw) = h·T, solved for w.
        slack = self._headroom * self.target.p99_s - age - (a + b * pending_rows + self._fit.margin)
        wait = slack / (1.0 + b * rate)
        if rate > 0:
            wait = min(wait, (limit - pending_rows) / rate)
        if not math.isfinite(wait) or rate * wait < 1.0 or wait < _MIN_WAIT_S:
            return 0.0
        return wait

    def snapshot(self) -> dict[str, float]:
        """The controller's state, for metrics and logs (``p99_s`` is 0.0 before any answer)."""
        a, b = self._fit.coefficients()
        return {
            "a_s": a,
            "b_s_per_row": b,
            "margin_s": self._fit.margin,
            "headroom": self._headroom,
            "p99_s": self._latencies.p99(),
            "arrival_rows_per_s": self._arrivals.rate(),
            "max_rows": float(self.max_rows()),
            "batches": float(self._fit.batches),
        }

    def _slo_rows(self) -> int:
        # Largest r with a + b·r + margin <= h·T/2 (a request may wait out one batch, then its own).
        a, b = self._fit.coefficients()
        room = self._headroom * self.target.p99_s / 2 - a - self._fit.margin
        if b <= 0:
            return self.target.max_batch_size if room >= 0 else 1
        return max(1, int(min(room / b + 1e-9, self.target.max_batch_size)))  # 24.999... is 25

    def _stable_rows(self) -> int:
        # Smallest r with λ·(a + b·r) <= u·r: a replica serves rows at least as fast as they come.
        a, b = self._fit.coefficients()
        demand = self._arrivals.rate()
        if demand * b >= _MAX_UTILIZATION:
            return self.target.max_batch_size
        return math.ceil(min(demand * a / (_MAX_UTILIZATION - demand * b), 1e9))

    def _adapt_headroom(self) -> None:
        # Right after a change, the p99 of 64 fresh answers is their maximum: one miss in 64
        # shrinks h again. The bias is toward meeting the target, and it fades as answers come.
        p99 = self._latencies.p99(self._since_change)
        target = self.target
        if p99 > target.p99_s:
            self._headroom = max(target.min_headroom, self._headroom * _SHRINK)
        elif p99 < _GROW_BELOW * target.p99_s:
            self._headroom = min(target.max_headroom, self._headroom * _GROW)
        else:
            return
        self._since_change = 0
