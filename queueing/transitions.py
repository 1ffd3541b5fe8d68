"""Every change a job's record goes through, as functions on a `Job`.

Status stores run these inside `StatusStore.update`, under their lock or transaction. Each one
returns None when it leaves the record unchanged (a late progress report, a finish after a
timeout) and something else when it changed it. They are the only place that changes a status,
and none of them changes a job whose status is final.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from queueing.errors import JobStateConflict
from queueing.jobs import (
    NO_PROGRESS,
    Attempt,
    ErrorInfo,
    ErrorType,
    HandlerOutcome,
    Job,
    JobStatus,
    Progress,
)

MAX_RETRY_DELAY = 60.0
NOTHING_EARLIER: Mapping[str, HandlerOutcome] = MappingProxyType({})
_UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again."""

    max_attempts: int = 3
    backoff_seconds: float = 1.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the wait before the attempt after `attempt`: doubling, jittered, capped."""
        base = min(MAX_RETRY_DELAY, self.backoff_seconds * 2 ** (attempt - 1))
        # Jitter spreads retries of jobs that failed together (a database restart, say).
        return min(MAX_RETRY_DELAY, base * rng.uniform(0.75, 1.25))


@dataclass(frozen=True, slots=True)
class StartedAttempt:
    """The facts a worker needs about the attempt it just started."""

    number: int
    earlier: Mapping[str, HandlerOutcome]  # outcomes of handlers that already succeeded


def new_job(
    job_id: str,
    job_type: str,
    handler_names: Sequence[str],
    now: float,
    *,
    owner: str | None = None,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
) -> Job:
    return Job(
        id=job_id,
        type=job_type,
        created_at=now,
        handlers=tuple(HandlerOutcome(name, JobStatus.QUEUED) for name in handler_names),
        owner=owner,
        idempotency_key=idempotency_key,
        request_digest=request_digest,
    )


def start(job: Job, now: float) -> StartedAttempt | None:
    """Move a queued job to running; None when it is no longer queued (canceled, say)."""
    if job.status is not JobStatus.QUEUED:
        return None
    job.status = JobStatus.RUNNING
    job.attempt += 1
    job.started_at = now
    job.next_attempt_at = None
    job.attempts = (*job.attempts, Attempt(job.attempt, now))
    if job.attempt == 1:
        # Nothing ran before the first attempt; this path runs for nearly every job.
        earlier: Mapping[str, HandlerOutcome] = NOTHING_EARLIER
        job.handlers = tuple(HandlerOutcome(h.name, JobStatus.RUNNING) for h in job.handlers)
    else:
        earlier = {h.name: h for h in job.handlers if h.status is JobStatus.SUCCEEDED}
        job.handlers = tuple(
            h if h.name in earlier else HandlerOutcome(h.name, JobStatus.RUNNING)
            for h in job.handlers
        )
    job.progress = NO_PROGRESS
    job.eta = None
    return StartedAttempt(job.attempt, earlier)


def record_progress(job: Job, progress: Progress, now: float) -> bool | None:
    """Record progress of a running job; progress that goes backwards is ignored."""
    if job.status is not JobStatus.RUNNING:
        return None
    previous = job.progress
    new_fraction = progress.fraction
    old_fraction = previous.fraction
    if new_fraction is not None and old_fraction is not None:
        if new_fraction < old_fraction:
            return None
    elif progress.total == previous.total and progress.done < previous.done:
        return None
    if progress == previous:
        return None
    job.progress = progress
    job.eta = _estimate_finish(job, new_fraction, now)
    return True


def _estimate_finish(job: Job, fraction: float | None, now: float) -> float | None:
    # Assumes the rest of the work goes at the rate seen so far in this attempt.
    if fraction is None or fraction <= 0 or job.started_at is None:
        return None
    elapsed = max(0.0, now - job.started_at)
    return now + elapsed * (1 - fraction) / fraction


def finish(
    job: Job,
    *,
    outcomes: Sequence[HandlerOutcome],
    files: Sequence[str],
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> JobStatus | None:
    """Record the end of an attempt: succeeded, canceled, failed, or queued for a retry.

    Returns None when the job was no longer running (it timed out, was stopped by shutdown or
    taken back after a lost lease), so a late result never overwrites the recorded outcome.
    """
    if job.status is not JobStatus.RUNNING:
        return None
    job.handlers = _merge_outcomes(job.handlers, outcomes)
    if files:
        job.files = (*job.files, *(name for name in files if name not in job.files))
    failed = [h for h in outcomes if h.status is JobStatus.FAILED]
    interrupted = any(h.status is JobStatus.CANCELED for h in outcomes)

    if not failed and not interrupted:
        result: dict[str, Any] = {}
        for handler in job.handlers:
            result.update(handler.output or {})
        job.result = result
        return _end(job, JobStatus.SUCCEEDED, None, now)

    if job.cancel_requested or (interrupted and not failed):
        # The client asked to stop: a failure that raced the cancel is not retried either.
        error = _first_error(failed)
        return _end(job, JobStatus.CANCELED, None, now, attempt_error=error)

    error = _first_error(failed)
    assert error is not None
    permanent = any(h.error_type is ErrorType.INVALID_INPUT for h in failed)
    if permanent or job.attempt >= policy.max_attempts:
        if not permanent and policy.max_attempts > 1:
            error = ErrorInfo(
                error.type, f"failed after {job.attempt} attempts; last error: {error.message}"
            )
        return _end(job, JobStatus.FAILED, error, now)

    job.status = JobStatus.QUEUED
    job.next_attempt_at = now + policy.delay(job.attempt, rng)
    _close_attempt(job, now, error)
    job.eta = None
    return JobStatus.QUEUED


def _merge_outcomes(
    current: Sequence[HandlerOutcome], outcomes: Sequence[HandlerOutcome]
) -> tuple[HandlerOutcome, ...]:
    if len(current) == len(outcomes) and all(
        old.name == new.name for old, new in zip(current, outcomes, strict=True)
    ):
        return tuple(outcomes)
    by_name = {h.name: h for h in outcomes}
    merged = [by_name.pop(h.name, h) for h in current]
    merged.extend(by_name.values())
    return tuple(merged)


def _first_error(failed: Sequence[HandlerOutcome]) -> ErrorInfo | None:
    if not failed:
        return None
    first = failed[0]
    message = f"handler {first.name} failed: {first.error}"
    return ErrorInfo(first.error_type or ErrorType.HANDLER_ERROR, message)


def _close_attempt(job: Job, now: float, error: ErrorInfo | None) -> None:
    if job.attempts and job.attempts[-1].finished_at is None:
        last = job.attempts[-1]
        job.attempts = (*job.attempts[:-1], Attempt(last.number, last.started_at, now, error))


def _end(
    job: Job,
    status: JobStatus,
    error: ErrorInfo | None,
    now: float,
    *,
    attempt_error: ErrorInfo | None = None,
    handler_status: JobStatus | None = None,
    handler_error: str | None = None,
) -> JobStatus:
    job.status = status
    job.error = error
    job.finished_at = now
    job.next_attempt_at = None
    job.eta = None
    _close_attempt(job, now, attempt_error or error)
    if any(h.status in _UNFINISHED for h in job.handlers):
        job.handlers = tuple(
            HandlerOutcome(
                h.name, handler_status or status, handler_error or h.error, h.output, h.error_type
            )
            if h.status in _UNFINISHED
            else h
            for h in job.handlers
        )
    return status


def set_accepted_status(job: Job, status: int) -> bool | None:
    """Remember the HTTP status that accepted the job, for idempotent replays."""
    if job.accepted_status == status:
        return None
    job.accepted_status = status
    return True


def request_cancel(job: Job, now: float) -> JobStatus | None:
    """Cancel a queued job at once, or flag a running one; a finished job is a conflict."""
    if job.status.is_final:
        raise JobStateConflict(
            job.id, f"job {job.id} is already {job.status}; nothing to cancel", status=job.status
        )
    if job.status is JobStatus.QUEUED:
        job.cancel_requested = True
        return _end(job, JobStatus.CANCELED, None, now)
    if job.cancel_requested:
        return None
    job.cancel_requested = True
    return job.status


def time_out(job: Job, now: float, limit: float) -> JobStatus | None:
    """End a running job that ran past its timeout; timeouts are never retried."""
    if job.status is not JobStatus.RUNNING:
        return None
    error = ErrorInfo(ErrorType.TIMEOUT, f"the job ran longer than its {limit:g} s timeout")
    return _end(
        job,
        JobStatus.FAILED,
        error,
        now,
        handler_status=JobStatus.FAILED,
        handler_error="timed out",
    )


def fail(job: Job, now: float, error: ErrorInfo) -> JobStatus | None:
    """End a queued or running job that cannot run at all; never retried."""
    if job.status.is_final:
        return None
    return _end(job, JobStatus.FAILED, error, now, handler_status=JobStatus.FAILED)


def fail_for_shutdown(job: Job, now: float) -> JobStatus | None:
    """End a queued or running job that a shutdown stopped (backends that keep nothing)."""
    if job.status.is_final:
        return None
    error = ErrorInfo(
        ErrorType.SHUTDOWN, "the service shut down before the job finished; submit it again"
    )
    return _end(job, JobStatus.FAILED, error, now, handler_status=JobStatus.FAILED)


def requeue(
    job: Job, now: float, reason: ErrorInfo, policy: RetryPolicy, *, limited: bool = True
) -> JobStatus | None:
    """Give a running job whose worker stopped or vanished back to the queue.

    After `policy.max_attempts` attempts it fails for good instead, so a job that kills its
    worker every time cannot loop forever. With `limited=False` (a graceful shutdown, which
    is no fault of the job) it always goes back.
    """
    if job.status is not JobStatus.RUNNING:
        return None
    if limited and job.attempt >= policy.max_attempts:
        error = ErrorInfo(
            reason.type, f"gave up after {job.attempt} attempts; last: {reason.message}"
        )
        return _end(job, JobStatus.FAILED, error, now, handler_status=JobStatus.FAILED)
    job.status = JobStatus.QUEUED
    job.next_attempt_at = None
    job.eta = None
    _close_attempt(job, now, reason)
    job.handlers = tuple(
        h if h.status is JobStatus.SUCCEEDED else HandlerOutcome(h.name, JobStatus.QUEUED)
        for h in job.handlers
    )
    return JobStatus.QUEUED
