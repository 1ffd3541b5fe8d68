"""The job state machine: every change a record goes through, and what never changes."""

from __future__ import annotations

import random

import pytest

from queueing import transitions
from queueing.errors import JobStateConflict
from queueing.jobs import ErrorInfo, ErrorType, HandlerOutcome, Job, JobStatus, Progress
from queueing.transitions import RetryPolicy

NOW = 1_800_000_000.0
POLICY = RetryPolicy(max_attempts=3, backoff_seconds=1.0)


def queued_job(handlers: tuple[str, ...] = ("first", "second")) -> Job:
    return transitions.new_job("job-1", "test", handlers, NOW)


def running_job(handlers: tuple[str, ...] = ("first", "second")) -> Job:
    job = queued_job(handlers)
    assert transitions.start(job, NOW + 1) is not None
    return job


def succeeded(name: str, **output: object) -> HandlerOutcome:
    return HandlerOutcome(name, JobStatus.SUCCEEDED, output=output)


def failed(name: str, error_type: ErrorType = ErrorType.HANDLER_ERROR) -> HandlerOutcome:
    return HandlerOutcome(name, JobStatus.FAILED, "boom", error_type=error_type)


def finish(job: Job, *outcomes: HandlerOutcome, now: float = NOW + 2) -> JobStatus | None:
    return transitions.finish(
        job, outcomes=outcomes, files=(), now=now, policy=POLICY, rng=random.Random(1)
    )


def test_new_job_is_queued_with_pending_handlers() -> None:
    job = queued_job()
    assert job.status is JobStatus.QUEUED
    assert job.attempt == 0
    assert [h.status for h in job.handlers] == [JobStatus.QUEUED, JobStatus.QUEUED]


def test_start_opens_attempt_one() -> None:
    job = queued_job()
    started = transitions.start(job, NOW + 1)
    assert started is not None
    assert started.number == 1
    assert job.status is JobStatus.RUNNING
    assert job.started_at == NOW + 1
    assert [a.number for a in job.attempts] == [1]
    assert all(h.status is JobStatus.RUNNING for h in job.handlers)


def test_start_skips_job_that_is_not_queued() -> None:
    job = running_job()
    assert transitions.start(job, NOW + 5) is None
    assert job.attempt == 1


def test_all_handlers_succeeding_merges_result() -> None:
    job = running_job()
    status = finish(job, succeeded("first", a=1), succeeded("second", b=2))
    assert status is JobStatus.SUCCEEDED
    assert job.result == {"a": 1, "b": 2}
    assert job.finished_at == NOW + 2
    assert job.attempts[-1].finished_at == NOW + 2
    assert job.error is None


def test_failed_handler_schedules_retry_with_backoff() -> None:
    job = running_job()
    status = finish(job, succeeded("first", a=1), failed("second"))
    assert status is JobStatus.QUEUED
    assert job.next_attempt_at is not None
    delay = job.next_attempt_at - (NOW + 2)
    assert 0.75 <= delay <= 1.25
    assert job.attempts[-1].error is not None
    assert "second" in job.attempts[-1].error.message
    assert job.error is None


def test_retry_keeps_succeeded_handler_outcome() -> None:
    job = running_job()
    finish(job, succeeded("first", a=1), failed("second"))
    started = transitions.start(job, NOW + 10)
    assert started is not None
    assert started.number == 2
    assert list(started.earlier) == ["first"]
    assert job.handlers[0].status is JobStatus.SUCCEEDED
    assert job.handlers[1].status is JobStatus.RUNNING


def test_backoff_doubles_and_caps_at_sixty_seconds() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay(attempt, rng) for attempt in (1, 2, 3, 10)]
    assert 0.75 <= delays[0] <= 1.25
    assert 1.5 <= delays[1] <= 2.5
    assert 3.0 <= delays[2] <= 5.0
    assert delays[3] <= 60.0


def test_last_attempt_failing_fails_job() -> None:
    job = running_job(("only",))
    for attempt in range(1, 4):
        status = finish(job, failed("only"), now=NOW + 10 * attempt)
        if attempt < 3:
            assert status is JobStatus.QUEUED
            assert transitions.start(job, NOW + 10 * attempt + 5) is not None
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error.type is ErrorType.HANDLER_ERROR
    assert "after 3 attempts" in job.error.message
    assert len(job.attempts) == 3


def test_invalid_input_is_never_retried() -> None:
    job = running_job(("only",))
    status = finish(job, failed("only", ErrorType.INVALID_INPUT))
    assert status is JobStatus.FAILED
    assert job.error is not None
    assert job.error.type is ErrorType.INVALID_INPUT
    assert job.attempt == 1


def test_interrupted_handler_ends_job_canceled() -> None:
    job = running_job(("only",))
    transitions.request_cancel(job, NOW + 1.5)
    status = finish(job, HandlerOutcome("only", JobStatus.CANCELED, "stopped: canceled"))
    assert status is JobStatus.CANCELED
    assert job.cancel_requested


def test_failure_after_cancel_request_is_not_retried() -> None:
    job = running_job(("only",))
    transitions.request_cancel(job, NOW + 1.5)
    assert finish(job, failed("only")) is JobStatus.CANCELED


def test_cancel_queued_job_ends_it_at_once() -> None:
    job = queued_job()
    assert transitions.request_cancel(job, NOW + 1) is JobStatus.CANCELED
    assert job.status is JobStatus.CANCELED
    assert job.finished_at == NOW + 1
    assert transitions.start(job, NOW + 2) is None


def test_cancel_running_job_only_flags_it() -> None:
    job = running_job()
    assert transitions.request_cancel(job, NOW + 1) is JobStatus.RUNNING
    assert job.status is JobStatus.RUNNING
    assert job.cancel_requested
    assert transitions.request_cancel(job, NOW + 2) is None


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED])
def test_cancel_finished_job_conflicts(final: JobStatus) -> None:
    job = queued_job()
    job.status = final
    with pytest.raises(JobStateConflict) as caught:
        transitions.request_cancel(job, NOW)
    assert caught.value.status == final
    assert not job.cancel_requested


def test_timeout_fails_job_for_good() -> None:
    job = running_job()
    assert transitions.time_out(job, NOW + 9, limit=5) is JobStatus.FAILED
    assert job.error == ErrorInfo(ErrorType.TIMEOUT, "the job ran longer than its 5 s timeout")
    assert all(h.status is JobStatus.FAILED for h in job.handlers)


def test_late_result_after_timeout_changes_nothing() -> None:
    job = running_job()
    transitions.time_out(job, NOW + 9, limit=5)
    version_fields = (job.status, job.error, job.finished_at, job.handlers)
    assert finish(job, succeeded("first"), succeeded("second"), now=NOW + 20) is None
    assert (job.status, job.error, job.finished_at, job.handlers) == version_fields
    assert job.result is None


def test_progress_moves_forward_with_eta() -> None:
    job = running_job()
    assert transitions.record_progress(job, Progress(1, 4), NOW + 3)
    assert job.progress.fraction == 0.25
    # A quarter took 2 s since the start at NOW + 1, so three quarters take 6 s more.
    assert job.eta == pytest.approx(NOW + 9)


def test_progress_never_goes_backwards() -> None:
    job = running_job()
    transitions.record_progress(job, Progress(3, 4), NOW + 3)
    assert transitions.record_progress(job, Progress(2, 4), NOW + 4) is None
    assert job.progress.done == 3


def test_progress_after_finish_is_ignored() -> None:
    job = running_job(("only",))
    finish(job, succeeded("only"))
    assert transitions.record_progress(job, Progress(1, 2), NOW + 30) is None
    assert job.progress.done == 0


def test_shutdown_fails_queued_and_running_jobs() -> None:
    queued = queued_job()
    running = running_job()
    assert transitions.fail_for_shutdown(queued, NOW) is JobStatus.FAILED
    assert transitions.fail_for_shutdown(running, NOW) is JobStatus.FAILED
    assert running.error is not None
    assert running.error.type is ErrorType.SHUTDOWN


def test_requeue_returns_job_until_attempts_run_out() -> None:
    job = running_job(("only",))
    lost = ErrorInfo(ErrorType.WORKER_LOST, "its worker stopped answering")
    for attempt in (1, 2):
        assert transitions.requeue(job, NOW + attempt, lost, POLICY) is JobStatus.QUEUED
        assert job.attempts[-1].error == lost
        assert transitions.start(job, NOW + attempt + 0.5) is not None
    assert transitions.requeue(job, NOW + 3, lost, POLICY) is JobStatus.FAILED
    assert job.error is not None
    assert job.error.type is ErrorType.WORKER_LOST
    assert "3 attempts" in job.error.message


def test_record_round_trips_through_plain_values() -> None:
    job = running_job()
    transitions.record_progress(job, Progress(1, 2, "half"), NOW + 2)
    finish(job, succeeded("first", a=[1, 2]), failed("second"))
    assert Job.from_record(job.to_record()) == job
