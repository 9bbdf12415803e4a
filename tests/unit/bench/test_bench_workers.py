"""The load split over generator processes: shares add up to the spec."""

from __future__ import annotations

from inferd.bench import BenchSpec
from inferd.bench.workers import plans

URL = "http://127.0.0.1:8000"


def test_clients_and_requests_split_evenly_and_add_up() -> None:
    shares = plans(BenchSpec(url=URL, model="m", concurrency=8, processes=3, num_requests=100))
    assert [p.concurrency for p in shares] == [3, 3, 2]
    assert [p.num_requests for p in shares] == [34, 33, 33]
    assert len({p.seed for p in shares}) == 3  # each process its own arrivals and data


def test_rates_split_so_that_the_sum_is_the_spec() -> None:
    spec = BenchSpec(url=URL, model="m", concurrency=None, rate=300.0, rate_end=600.0,
                     processes=3, max_outstanding=100)  # fmt: skip
    shares = plans(spec)
    assert sum(p.rate or 0 for p in shares) == 300.0
    assert sum(p.rate_end or 0 for p in shares) == 600.0
    assert all(p.max_outstanding == 34 for p in shares)


def test_never_more_processes_than_requests() -> None:
    spec = BenchSpec(url=URL, model="m", concurrency=4, processes=4, num_requests=2)
    assert [p.num_requests for p in plans(spec)] == [1, 1]
