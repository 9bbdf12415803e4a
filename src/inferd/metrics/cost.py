"""What a model costs: replica-seconds priced per hour, per million inferences, and per request.

The bill is time, not work: each replica costs ``price_per_hour`` for as long as it exists,
busy or idle, and nothing once the model scales to zero. ``CostMeter`` integrates the replica
count piecewise over time (the pool reports each change), so the per-million figure it
derives is the honest one. ``request_share`` splits only the compute time of the batch a
request rode in; idle time belongs to no request, so those shares add up to less than the bill
whenever replicas sit idle (by exactly the utilisation).
"""

from __future__ import annotations

import math
import threading

from inferd.clock import Clock
from inferd.metrics.window import SlidingWindow

SECONDS_PER_HOUR = 3600.0


def request_share(price_per_hour: float, compute_s: float, batch_rows: int, rows: int) -> float:
    """A request's share of its batch's cost: price/3600 * compute_s * rows / batch_rows."""
    if batch_rows <= 0:
        raise ValueError(f"batch_rows = {batch_rows}: expected an integer >= 1")
    # Multiply before dividing so that round figures stay exact.
    return price_per_hour * compute_s * rows / (SECONDS_PER_HOUR * batch_rows)


class CostMeter:
    """Integrates replica-seconds over time and counts inferences, for one model.

    Single writer (the server's event loop); ``set_replicas`` and the readers share a lock so
    that a scrape from another thread sees a consistent timeline.
    """

    def __init__(self, price_per_hour: float, clock: Clock, window_s: int = 10) -> None:
        if not (math.isfinite(price_per_hour) and price_per_hour >= 0):
            raise ValueError(f"price_per_hour = {price_per_hour}: expected a number >= 0")
        self._price = price_per_hour
        self._clock = clock
        now = clock.now()
        self._lock = threading.Lock()
        self._replicas = 0
        self._since = now  # when the current replica count took effect
        self._replica_s_before = 0.0  # replica-seconds accrued before ``_since``
        # (time, replicas from then on), pruned to what the window can still see.
        self._changes: list[tuple[float, int]] = [(now, 0)]
        self._inferences = SlidingWindow(window_s, now)
        self._inferences_total = 0

    @property
    def price_per_hour(self) -> float:
        """Price of one replica for one hour, in currency units."""
        return self._price

    @property
    def replicas(self) -> int:
        """The replica count last reported."""
        return self._replicas

    @property
    def inferences_total(self) -> int:
        """Inferences (rows answered) counted since the meter started."""
        return self._inferences_total

    def set_replicas(self, n: int) -> None:
        """The model now has ``n`` replicas; the bill runs at ``n`` * price from now on."""
        if n < 0:
            raise ValueError(f"replicas = {n}: expected an integer >= 0")
        now = self._clock.now()
        with self._lock:
            self._replica_s_before += self._replicas * (now - self._since)
            self._replicas, self._since = n, now
            self._changes.append((now, n))
            self._prune(self._inferences.begin(now))

    def add_inferences(self, rows: int) -> None:
        """Count ``rows`` inferences answered now."""
        self._inferences.add(self._clock.now(), rows)
        self._inferences_total += rows

    def replica_seconds(self) -> float:
        """Replica-seconds since the meter started."""
        now = self._clock.now()
        with self._lock:
            return self._replica_s_before + self._replicas * (now - self._since)

    def cost_total(self) -> float:
        """Currency units spent since the meter started."""
        return self._price * self.replica_seconds() / SECONDS_PER_HOUR

    def window_replica_seconds(self) -> float:
        """Replica-seconds over the sliding window."""
        now = self._clock.now()
        with self._lock:
            return self._replica_seconds_between(self._inferences.begin(now), now)

    def window_cost(self) -> float:
        """Currency units accrued over the sliding window."""
        return self._price * self.window_replica_seconds() / SECONDS_PER_HOUR

    def window_inferences(self) -> float:
        """Inferences counted over the sliding window."""
        return self._inferences.total(self._clock.now())

    def cost_per_million(self) -> float | None:
        """Window cost / window inferences * 1e6; None when the window holds no inference."""
        inferences = self.window_inferences()
        if inferences <= 0:
            return None
        return self.window_cost() * 1e6 / inferences

    def request_share(self, compute_s: float, batch_rows: int, rows: int) -> float:
        """This model's ``request_share`` at its price (idle time is attributed to no request)."""
        return request_share(self._price, compute_s, batch_rows, rows)

    def _replica_seconds_between(self, begin: float, end: float) -> float:
        """∫ replicas(t) dt over [begin, end], from the change timeline (lock held)."""
        total = 0.0
        changes = self._changes
        for i, (at, replicas) in enumerate(changes):
            until = changes[i + 1][0] if i + 1 < len(changes) else end
            overlap = min(until, end) - max(at, begin)
            if overlap > 0:
                total += replicas * overlap
        return total

    def _prune(self, begin: float) -> None:
        """Drop changes superseded before ``begin`` (window starts only move forward)."""
        keep_from = 0
        for i in range(1, len(self._changes)):
            if self._changes[i][0] <= begin:
                keep_from = i
        if keep_from:
            del self._changes[:keep_from]
