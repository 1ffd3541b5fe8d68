"""Retry-After estimates: from the backlog and the observed durations, never below 1 s."""

from __future__ import annotations

from queueing.estimates import DurationStats


def test_unknown_type_uses_default_duration() -> None:
    stats = DurationStats(default_seconds=2.0)
    assert stats.average("thumbnails") == 2.0
    assert stats.retry_after("thumbnails", queued_ahead=0, workers=4) == 2


def test_average_moves_toward_recent_durations() -> None:
    stats = DurationStats()
    stats.record("csv-profile", 10.0)
    stats.record("csv-profile", 20.0)
    assert stats.average("csv-profile") == 12.0


def test_backlog_is_shared_between_workers() -> None:
    stats = DurationStats()
    stats.record("csv-profile", 4.0)
    # Eight jobs ahead on four workers: two rounds of 4 s, then this job's own 4 s.
    assert stats.retry_after("csv-profile", queued_ahead=8, workers=4) == 12


def test_running_job_uses_what_remains() -> None:
    stats = DurationStats()
    assert stats.retry_after("delay", queued_ahead=100, workers=1, remaining=2.2) == 3


def test_estimate_is_at_least_one_second() -> None:
    stats = DurationStats()
    stats.record("noop", 0.001)
    assert stats.retry_after("noop", queued_ahead=0, workers=4) == 1
    assert stats.retry_after("noop", queued_ahead=0, workers=4, remaining=-5) == 1
