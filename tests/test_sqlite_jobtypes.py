"""A job type for the SQLite subprocess tests, loaded through `handlers.modules`.

`stubborn` works for the given seconds and never looks at its cancel token, like a handler
stuck in a long library call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from handlers.registry import JSON, Intake, Registry, Submission
from queueing.context import JobContext
from queueing.errors import InvalidInput
from queueing.jobs import Notification


@dataclass(frozen=True, kw_only=True)
class StubbornRequested(Notification):
    seconds: float


def parse_stubborn(submission: Submission, intake: Intake) -> StubbornRequested:
    submission.check_names(["seconds"])
    seconds = submission.json.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidInput("seconds", "missing or not a number")
    return StubbornRequested(job_id=intake.job_id, seconds=float(seconds))


def work_without_checkpoints(
    notification: StubbornRequested, context: JobContext
) -> dict[str, Any]:
    time.sleep(notification.seconds)  # the job's own work, which no cancel token interrupts
    return {"seconds": notification.seconds}


def register(registry: Registry) -> None:
    registry.job_type("stubborn", StubbornRequested, parse_stubborn, accepts=JSON)
    registry.handler(StubbornRequested, "work", work_without_checkpoints)
