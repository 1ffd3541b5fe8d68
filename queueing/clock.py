"""Time sources, injected so tests can move time instead of waiting for it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Return wall-clock time in Unix seconds: timestamps, retention, retry times."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic time in seconds: deadlines and durations."""
        ...


class SystemClock:
    """The real clocks of the process."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
