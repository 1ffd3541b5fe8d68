"""The worker pool: handlers run, outcomes recorded, and the worker survives every job."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from queueing.context import JobContext
from queueing.errors import InvalidInput
from queueing.jobs import ErrorType, JobStatus
from queueing.local_files import LocalFileStore
from tests.support import HANG_GUARD, Engine, Gate, Work, build_engine


@pytest.fixture
def files(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path)


def started(engine: Engine) -> Iterator[Engine]:
    engine.pool.start()
    yield engine
    engine.pool.stop(grace=5)


def test_run_once_runs_every_handler_and_merges_result(files: LocalFileStore) -> None:
    engine = build_engine(
        [("first", lambda n, ctx: {"a": 1}), ("second", lambda n, ctx: {"b": ctx.job_id})],
        files,
    )
    job_id = engine.submit()
    assert engine.pool.run_once(timeout=1)
    job = engine.job(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"a": 1, "b": job_id}
    assert [h.status for h in job.handlers] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]


def test_raising_handler_fails_job_but_others_run(files: LocalFileStore) -> None:
    ran: list[str] = []

    def explode(n: Work, ctx: JobContext) -> None:
        raise ValueError("no luck")

    def record(n: Work, ctx: JobContext) -> dict[str, Any]:
        ran.append(ctx.job_id)
        return {"recorded": True}

    engine = build_engine([("explode", explode), ("record", record)], files)
    job_id = engine.submit()
    engine.pool.run_once(timeout=1)
    job = engine.job(job_id)
    assert job.status is JobStatus.FAILED
    assert ran == [job_id]
    assert job.error is not None
    assert job.error.type is ErrorType.HANDLER_ERROR
    assert "explode" in job.error.message
    assert "ValueError: no luck" in job.error.message
    assert [h.status for h in job.handlers] == [JobStatus.FAILED, JobStatus.SUCCEEDED]


@pytest.mark.parametrize("error", [RuntimeError("boom"), SystemExit(3), KeyboardInterrupt()])
def test_worker_thread_survives_any_handler_error(
    files: LocalFileStore, error: BaseException
) -> None:
    def handler(n: Work, ctx: JobContext) -> dict[str, Any]:
        if n.tag == "raise":
            raise error
        return {"ok": True}

    engine = build_engine([("only", handler)], files, threads=1)
    for _ in started(engine):
        bad = engine.submit("raise")
        good = engine.submit("fine")
        assert engine.wait_finished(bad).status is JobStatus.FAILED
        assert engine.wait_finished(good).status is JobStatus.SUCCEEDED
        assert engine.pool.counts().alive == 1


def test_join_raises_the_handlers_own_exception(files: LocalFileStore) -> None:
    def handler(n: Work, ctx: JobContext) -> None:
        raise LookupError("the real traceback")

    engine = build_engine([("only", handler)], files, threads=1)
    for _ in started(engine):
        engine.submit()
        with pytest.raises(LookupError, match="the real traceback"):
            engine.pool.join(HANG_GUARD, raise_errors=True)


def test_invalid_input_at_run_time_is_not_retried(files: LocalFileStore) -> None:
    calls: list[int] = []

    def handler(n: Work, ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise InvalidInput("image", "the image data is truncated")

    engine = build_engine([("only", handler)], files, max_attempts=3)
    job_id = engine.submit()
    engine.pool.run_once(timeout=1)
    job = engine.job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error.type is ErrorType.INVALID_INPUT
    assert calls == [1]


def test_retry_runs_only_the_failed_handler_again(files: LocalFileStore) -> None:
    calls: dict[str, list[int]] = {"steady": [], "flaky": []}

    def steady(n: Work, ctx: JobContext) -> dict[str, Any]:
        calls["steady"].append(ctx.attempt)
        return {"steady": ctx.attempt}

    def flaky(n: Work, ctx: JobContext) -> dict[str, Any]:
        calls["flaky"].append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("database went away")
        return {"flaky": ctx.attempt}

    engine = build_engine([("steady", steady), ("flaky", flaky)], files, max_attempts=3)
    for _ in started(engine):
        job_id = engine.submit()
        job = engine.wait_finished(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert calls == {"steady": [1], "flaky": [1, 2]}
    assert job.result == {"steady": 1, "flaky": 2}
    assert [a.number for a in job.attempts] == [1, 2]
    assert job.attempts[0].error is not None
    assert "database went away" in job.attempts[0].error.message


def test_cancel_stops_running_job_at_checkpoint(files: LocalFileStore) -> None:
    gate = Gate()

    def patient(n: Work, ctx: JobContext) -> None:
        gate.entered.set()
        while True:
            ctx.sleep(HANG_GUARD)

    engine = build_engine([("patient", patient)], files, threads=1)
    for _ in started(engine):
        job_id = engine.submit()
        assert gate.entered.wait(HANG_GUARD)
        engine.service.cancel(job_id, owner=None)
        job = engine.wait_finished(job_id)
    assert job.status is JobStatus.CANCELED
    assert job.cancel_requested
    assert job.error is None


def test_timeout_abandons_thread_and_others_keep_running(files: LocalFileStore) -> None:
    gate = Gate()
    closed: list[tuple[str, str]] = []  # (job tag, name of the thread that closed its resource)

    def resource(settings: Mapping[str, Any]) -> Iterator[list[str]]:
        tags: list[str] = []
        yield tags
        closed.append((tags[0], threading.current_thread().name))

    def handler(n: Work, ctx: JobContext) -> dict[str, Any]:
        ctx.resource("connection").append(n.tag)
        if n.tag == "stubborn":
            gate.pass_through()  # ignores its cancel token on purpose
            return {"late": True}
        return {"quick": True}

    engine = build_engine(
        [("only", handler)], files, threads=1, timeout=0.2, resources={"connection": resource}
    )
    for _ in started(engine):
        stubborn = engine.submit("stubborn")
        assert gate.entered.wait(HANG_GUARD)
        timed_out = engine.wait_finished(stubborn)
        quick = engine.submit("quick")
        assert engine.wait_finished(quick).status is JobStatus.SUCCEEDED
        assert engine.pool.counts().abandoned == 1
        gate.release.set()
        assert engine.pool.join(HANG_GUARD)
        after = engine.job(stubborn)
        assert engine.pool.counts().abandoned == 0
    assert timed_out.status is JobStatus.FAILED
    assert timed_out.error is not None
    assert timed_out.error.type is ErrorType.TIMEOUT
    # The late result never overwrites the recorded outcome.
    assert after.status is JobStatus.FAILED
    assert after.result is None
    assert after.version == timed_out.version
    # Each job closed its own resource on its own thread; the abandoned one did so last.
    assert [tag for tag, _ in closed] == ["quick", "stubborn"]
    assert closed[0][1] != closed[1][1]
    assert closed[1][1] == "backburner-worker-1"


def test_progress_after_finish_is_ignored(files: LocalFileStore) -> None:
    contexts: list[JobContext] = []

    def handler(n: Work, ctx: JobContext) -> None:
        ctx.report_progress(1, 2, "half")
        contexts.append(ctx)

    engine = build_engine([("only", handler)], files)
    job_id = engine.submit()
    engine.pool.run_once(timeout=1)
    finished = engine.job(job_id)
    contexts[0].report_progress(2, 2, "late")
    after = engine.job(job_id)
    assert finished.status is JobStatus.SUCCEEDED
    assert after.version == finished.version
    assert after.progress.message == "half"


def test_stop_fails_unfinished_jobs_on_memory_backend(files: LocalFileStore) -> None:
    gate = Gate()

    def handler(n: Work, ctx: JobContext) -> None:
        gate.pass_through()  # ignores the shutdown token

    engine = build_engine([("only", handler)], files, threads=1)
    engine.pool.start()
    running = engine.submit()
    assert gate.entered.wait(HANG_GUARD)
    queued = engine.submit()
    report = engine.pool.stop(grace=0.1)
    gate.release.set()
    assert report.interrupted == [running]
    assert report.drained == [queued]
    for job_id in (running, queued):
        job = engine.job(job_id)
        assert job.status is JobStatus.FAILED
        assert job.error is not None
        assert job.error.type is ErrorType.SHUTDOWN


def test_stop_lets_running_job_finish_within_grace(files: LocalFileStore) -> None:
    gate = Gate()

    def handler(n: Work, ctx: JobContext) -> dict[str, Any]:
        gate.entered.set()
        return {"done": True}

    engine = build_engine([("only", handler)], files, threads=1)
    engine.pool.start()
    job_id = engine.submit()
    assert gate.entered.wait(HANG_GUARD)
    report = engine.pool.stop(grace=HANG_GUARD)
    assert report.interrupted == []
    assert engine.job(job_id).status is JobStatus.SUCCEEDED
