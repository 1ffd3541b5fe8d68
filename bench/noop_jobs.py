"""Job types the benchmarks submit; they do no work, so only the engine is measured.

They do not ship enabled. A benchmark loads them through the `handlers.modules` setting:
`{"handlers": {"modules": ["bench.noop_jobs"]}}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from handlers.registry import JSON, Intake, Registry, Submission
from queueing.context import JobContext
from queueing.jobs import Notification

NOOP = "noop"
STAMP = "stamp"


@dataclass(frozen=True, kw_only=True)
class NoopRequested(Notification):
    """A job that takes no input and does nothing."""


@dataclass(frozen=True, kw_only=True)
class StampRequested(Notification):
    """A job that takes no input and records when its handler started."""


def parse_noop(submission: Submission, intake: Intake) -> NoopRequested:
    submission.check_names([])
    return NoopRequested(job_id=intake.job_id)


def parse_stamp(submission: Submission, intake: Intake) -> StampRequested:
    submission.check_names([])
    return StampRequested(job_id=intake.job_id)


def do_nothing(notification: NoopRequested, context: JobContext) -> None:
    return None


def stamp(notification: StampRequested, context: JobContext) -> dict[str, float]:
    """Return the `time.perf_counter()` reading at the start of the handler, as the result."""
    return {"started": time.perf_counter()}


def register(registry: Registry) -> None:
    registry.job_type(
        NOOP, NoopRequested, parse_noop, accepts=JSON, description="Do nothing (benchmarks)."
    )
    registry.handler(NoopRequested, "nothing", do_nothing)
    registry.job_type(
        STAMP,
        StampRequested,
        parse_stamp,
        accepts=JSON,
        description="Record when the handler started (benchmarks).",
    )
    registry.handler(StampRequested, "stamp", stamp)
