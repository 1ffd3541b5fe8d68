"""Observed job durations, for `Retry-After` and backlog estimates."""

from __future__ import annotations

import math
import threading

# Weight of the newest duration in the moving average: recent jobs count most, one outlier
# moves the estimate by a fifth.
_SMOOTHING = 0.2
MIN_RETRY_AFTER = 1


class DurationStats:
    """Moving averages of how long each job type's attempts take, in seconds."""

    def __init__(self, default_seconds: float = 1.0) -> None:
        self._default = default_seconds
        self._lock = threading.Lock()  # guards _averages
        self._averages: dict[str, float] = {}

    def record(self, job_type: str, seconds: float) -> None:
        with self._lock:
            previous = self._averages.get(job_type)
            if previous is None:
                self._averages[job_type] = seconds
            else:
                self._averages[job_type] = previous + _SMOOTHING * (seconds - previous)

    def average(self, job_type: str) -> float:
        with self._lock:
            return self._averages.get(job_type, self._default)

    def retry_after(
        self, job_type: str, *, queued_ahead: int, workers: int, remaining: float | None = None
    ) -> int:
        """Estimate the seconds until a job of `job_type` may be finished, at least 1.

        `queued_ahead` jobs are shared among `workers`. `remaining` is the time left of a job
        that is already running, when its progress or average duration gives one.
        """
        average = self.average(job_type)
        if remaining is not None:
            estimate = remaining
        else:
            rounds = queued_ahead / max(1, workers)
            estimate = (rounds + 1) * average
        return max(MIN_RETRY_AFTER, math.ceil(estimate))
