"""The `delay` job type: waits a given time in steps, for trying clients and for tests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from handlers.registry import JSON, Intake, Registry, Submission
from queueing.context import JobContext
from queueing.errors import InvalidInput
from queueing.jobs import Notification

STEP_SECONDS = 0.05


@dataclass(frozen=True, kw_only=True)
class DelayRequested(Notification):
    seconds: float
    fail: bool = False


class DelayFailed(RuntimeError):
    """Raised by a `delay` job sent with `"fail": true`, on every attempt; it is retried."""


def parse(submission: Submission, intake: Intake) -> DelayRequested:
    submission.check_names(["seconds", "fail"])
    limit = intake.settings["jobs"]["delay_max_seconds"]
    if "seconds" not in submission.json:
        raise InvalidInput("seconds", f"missing; send a number of seconds from 0 to {limit:g}")
    seconds = submission.json["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
        raise InvalidInput("seconds", f"must be a number from 0 to {limit:g}, got {seconds!r}")
    if not 0 <= seconds <= limit:
        raise InvalidInput("seconds", f"must be from 0 to {limit:g} (jobs.delay_max_seconds)")
    fail = submission.json.get("fail", False)
    if not isinstance(fail, bool):
        raise InvalidInput("fail", f"must be true or false, got {fail!r}")
    return DelayRequested(job_id=intake.job_id, seconds=float(seconds), fail=fail)


def wait_out(notification: DelayRequested, context: JobContext) -> dict[str, Any]:
    """Wait in 50 ms steps, reporting progress and stopping on cancel at each step."""
    steps = max(1, math.ceil(notification.seconds / STEP_SECONDS))
    step = notification.seconds / steps
    for done in range(1, steps + 1):
        context.sleep(step)
        context.report_progress(
            done, steps, f"waited {done * step:.2f} of {notification.seconds:g} s"
        )
    if notification.fail:
        raise DelayFailed(f'failed on request ("fail": true) in attempt {context.attempt}')
    return {"waited_seconds": notification.seconds}


def register(registry: Registry) -> None:
    registry.job_type(
        "delay",
        DelayRequested,
        parse,
        accepts=JSON,
        description="Wait the given seconds; for trying clients and for tests.",
    )
    registry.handler(DelayRequested, "wait", wait_out)
