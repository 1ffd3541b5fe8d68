"""Job types for tests, loaded through `handlers.modules` like any user's own job types."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

from handlers.registry import JSON, Intake, Registry, Submission
from queueing.context import JobContext
from queueing.errors import InvalidInput
from queueing.jobs import Notification


@dataclass(frozen=True, kw_only=True)
class NoopRequested(Notification):
    pass


@dataclass(frozen=True, kw_only=True)
class CrashRequested(Notification):
    pass


@dataclass(frozen=True, kw_only=True)
class EchoRequested(Notification):
    text: str


def parse_noop(submission: Submission, intake: Intake) -> NoopRequested:
    submission.check_names([])
    return NoopRequested(job_id=intake.job_id)


def parse_crash(submission: Submission, intake: Intake) -> CrashRequested:
    submission.check_names([])
    return CrashRequested(job_id=intake.job_id)


def parse_echo(submission: Submission, intake: Intake) -> EchoRequested:
    submission.check_names(["text"])
    text = submission.json.get("text")
    if not isinstance(text, str):
        raise InvalidInput("text", "missing or not a string")
    return EchoRequested(job_id=intake.job_id, text=text)


def do_nothing(notification: NoopRequested, context: JobContext) -> None:
    return None


def crash_process(notification: CrashRequested, context: JobContext) -> None:
    """Kill the whole process, as a segfaulting native library would."""
    os.kill(os.getpid(), signal.SIGKILL)


def echo(notification: EchoRequested, context: JobContext) -> dict[str, Any]:
    url = context.save_output("echo.txt", notification.text.encode())
    return {"text": notification.text, "url": url}


def register(registry: Registry) -> None:
    registry.job_type("noop", NoopRequested, parse_noop, accepts=JSON)
    registry.handler(NoopRequested, "nothing", do_nothing)
    registry.job_type("crash", CrashRequested, parse_crash, accepts=JSON)
    registry.handler(CrashRequested, "crash", crash_process)
    registry.job_type("echo", EchoRequested, parse_echo, accepts=JSON)
    registry.handler(EchoRequested, "echo", echo)
