"""The progress line, ETA and report, on a fake clock."""

from __future__ import annotations

import math

from inferd.clock import FakeClock
from inferd.jobs.progress import ProgressMeter, Report, duration, estimate_lines, report_lines


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (4.25, 65, 7320)] == ["4.2s", "1m05s", "2h02m"]
    assert duration(math.inf) == "?"


def test_speed_and_eta_follow_the_recent_window() -> None:
    clock = FakeClock()
    meter = ProgressMeter(1000, done_rows=100, clock=clock, window_s=10.0)
    assert meter.eta_s() == math.inf and "0 rows/s" in meter.line()
    for _ in range(4):
        clock.advance(1.0)
        meter.add(50)
    assert meter.rows_per_s() == 50.0
    assert meter.eta_s() == 14.0  # 700 rows left at 50 rows/s
    line = meter.line()
    assert "30.0%" in line and "300/1,000 rows" in line and "ETA 14.0s" in line
    for _ in range(20):  # the job speeds up: the window forgets the slow start
        clock.advance(1.0)
        meter.add(10 if meter.done_rows + 10 <= 1000 else 0)
    assert meter.rows_per_s() < 20


def test_the_report_gives_rows_time_speed_failures_and_cost() -> None:
    report = Report(rows=1000, failed=2, run_rows=600, run_s=10.0, compute_s=6.0, batch_size=256,
                    replicas=2, price_per_hour=3.6, cost=0.02, peak_rss_mb=150)  # fmt: skip
    text = "\n".join(report_lines(report, "out.parquet", "out.errors.jsonl"))
    assert "1,000, 2 failed (see out.errors.jsonl)" in text
    assert "400 rows were committed by earlier runs" in text
    assert "100 rows/s" in text and "0.0200 at 3.6 per replica-hour" in text


def test_the_estimate_scales_the_sample_to_the_whole_input() -> None:
    text = "\n".join(estimate_lines(36_000, False, 100.0, 5.0, price=2.0, replicas=1))
    assert "about 36,000" in text and "6m05s" in text and "0.2028" in text
