"""The server's collector settings: first-generation collections only past the working set."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from inferd.gc_tuning import FIRST_GENERATION_THRESHOLD, tune_for_serving


@pytest.fixture
def restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("restore_thresholds")
def test_requests_in_flight_do_not_set_off_collections() -> None:
    gc.set_threshold(700, 10, 10)
    tune_for_serving()
    assert gc.get_threshold() == (FIRST_GENERATION_THRESHOLD, 10, 10)
    collections = gc.get_stats()[0]["collections"]
    # A wave of containers past the default threshold of 700, allocated and then all freed.
    wave = [{"request": i, "headers": [(b"a", b"b")]} for i in range(1_300)]
    del wave
    assert gc.get_stats()[0]["collections"] == collections
