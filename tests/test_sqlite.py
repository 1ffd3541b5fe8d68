"""The SQLite backend's own promises: restarts, leases, other processes, fsync, the schema."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from queueing import sqlite_queue, transitions
from queueing.errors import BackendUnavailable, IdempotencyKeyInFlight
from queueing.jobs import (
    Attempt,
    ErrorInfo,
    ErrorType,
    HandlerOutcome,
    Job,
    JobStatus,
    Progress,
    new_job_id,
)
from queueing.sqlite import SqliteDatabase
from queueing.sqlite_queue import SqliteQueue
from queueing.sqlite_records import FAST_ENCODING, record_of
from queueing.sqlite_store import FINISHED_BEFORE, SqliteStatusStore
from queueing.transitions import RetryPolicy
from tests.support import HANG_GUARD, ManualClock
from tests.test_backends import Ping, ping_registry

LEASE = 30.0
POLICY = RetryPolicy(max_attempts=3, backoff_seconds=1.0)


@dataclass
class Process:
    """One process's view of the database file: its own connections, queue and store."""

    database: SqliteDatabase
    queue: SqliteQueue
    store: SqliteStatusStore
    clock: ManualClock

    def submit(self, *, job_type: str = "ping", key: str | None = None) -> Job:
        self.clock.advance(0.01)
        now = self.clock.now()
        job = transitions.new_job(new_job_id(now), job_type, ["only"], now, idempotency_key=key)
        notification = Ping(job_id=job.id)
        self.queue.reserve()
        self.store.create(job, notification.to_payload())
        self.queue.put(notification)
        return job

    def take(self, timeout: float = 1) -> Ping | None:
        """Take the next job and start it, as a worker does; None when none came."""
        notification = self.queue.get(timeout=timeout)
        if notification is None:
            return None
        assert isinstance(notification, Ping)
        started = self.store.update(
            notification.job_id, partial(transitions.start, now=self.clock.now())
        )
        assert started is not None
        return notification


OpenProcess = Callable[..., Process]


@pytest.fixture
def open_process(tmp_path: Path) -> Iterator[OpenProcess]:
    """Open the database file the way a new process would; every call is another process."""
    opened: list[Process] = []
    clock = ManualClock()  # one wall clock for the machine, shared by its processes
    registry = ping_registry()

    def open_one(synchronous: str = "normal") -> Process:
        database = SqliteDatabase(tmp_path / "jobs.sqlite3", synchronous)  # type: ignore[arg-type]
        queue = SqliteQueue(
            database,
            max_size=100,
            lease_seconds=LEASE,
            policy=POLICY,
            decode=registry.decode,
            clock=clock,
        )
        process = Process(database, queue, SqliteStatusStore(database, clock), clock)
        opened.append(process)
        return process

    yield open_one
    for process in opened:
        process.queue.close()
        process.database.close()


def finish_with(process: Process, outcome: HandlerOutcome) -> Any:
    """Return the change that ends a running attempt with one handler's `outcome`."""
    return partial(
        transitions.finish,
        outcomes=[outcome],
        files=[],
        now=process.clock.now(),
        policy=POLICY,
        rng=random.Random(2),
    )


def request_cancel(process: Process, job_id: str) -> None:
    process.store.update(job_id, partial(transitions.request_cancel, now=process.clock.now()))


# Restarts ----------------------------------------------------------------------------------------


def test_restart_keeps_jobs_keys_and_cancel_flags(open_process: OpenProcess) -> None:
    # Given a running job asked to cancel, then a queued job and a queued job with a key
    before = open_process()
    running = before.submit()
    assert before.take() == Ping(job_id=running.id)
    request_cancel(before, running.id)
    queued = before.submit()
    keyed = before.submit(key="order-1")
    before.database.close()

    # When another process opens the file
    after = open_process()

    # Then everything is there
    assert after.store.get(running.id).cancel_requested is True
    assert after.store.get(running.id).status is JobStatus.RUNNING
    replay = after.store.claim_idempotency_key(None, "order-1")
    assert replay is not None
    assert replay.id == keyed.id
    assert after.queue.depth() == 2
    assert after.queue.get(timeout=1) == Ping(job_id=queued.id)
    assert after.queue.get(timeout=1) == Ping(job_id=keyed.id)


def test_unknown_job_type_fails_job(open_process: OpenProcess) -> None:
    process = open_process()
    job = process.submit(job_type="gone")
    assert process.queue.get(timeout=0.05) is None
    failed = process.store.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.type is ErrorType.INVALID_INPUT
    assert "handlers.modules" in failed.error.message


# Leases ------------------------------------------------------------------------------------------


def test_expired_lease_requeues_job_for_next_attempt(open_process: OpenProcess) -> None:
    # Given a job running in a process that then dies without a word
    dead = open_process()
    job = dead.submit()
    assert dead.take() is not None

    # When its lease runs out and another process looks for work
    dead.clock.advance(LEASE + 1)
    alive = open_process()
    taken = alive.take()

    # Then the other process runs it again, and the record shows why
    assert taken == Ping(job_id=job.id)
    record = alive.store.get(job.id)
    assert record.status is JobStatus.RUNNING
    assert record.attempt == 2
    lost = record.attempts[0].error
    assert lost is not None
    assert lost.type is ErrorType.WORKER_LOST
    assert "stopped renewing its lease" in lost.message


def test_poison_job_fails_after_max_attempts(open_process: OpenProcess) -> None:
    first = open_process()
    job = first.submit()
    for _ in range(POLICY.max_attempts):
        process = open_process()
        assert process.take() == Ping(job_id=job.id)
        process.clock.advance(LEASE + 1)  # the process died during the attempt

    survivor = open_process()
    assert survivor.take(timeout=0.05) is None
    record = survivor.store.get(job.id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.type is ErrorType.WORKER_LOST
    assert f"gave up after {POLICY.max_attempts} attempts" in record.error.message
    assert [a.error.type for a in record.attempts if a.error] == [ErrorType.WORKER_LOST] * 3


def test_renewed_lease_is_not_taken_back(open_process: OpenProcess) -> None:
    owner = open_process()
    job = owner.submit()
    assert owner.take() is not None
    owner.clock.advance(LEASE * 0.9)
    owner.queue.renew([job.id])
    owner.clock.advance(LEASE * 0.9)
    other = open_process()
    assert other.take(timeout=0.05) is None
    assert other.store.get(job.id).attempt == 1


def test_job_requeued_by_shutdown_is_free_at_once(open_process: OpenProcess) -> None:
    stopping = open_process()
    job = stopping.submit()
    assert stopping.take() is not None
    shutdown = ErrorInfo(ErrorType.SHUTDOWN, "the service shut down during the attempt")
    stopping.store.update(
        job.id,
        partial(
            transitions.requeue,
            now=stopping.clock.now(),
            reason=shutdown,
            policy=POLICY,
            limited=False,
        ),
    )
    # No lease to wait for: the next process takes it without the clock moving.
    assert open_process().take() == Ping(job_id=job.id)


def test_retry_is_taken_by_any_process_once_due(open_process: OpenProcess) -> None:
    failing = open_process()
    job = failing.submit()
    assert failing.take() is not None
    outcome = HandlerOutcome("only", JobStatus.FAILED, "boom")
    assert failing.store.update(job.id, finish_with(failing, outcome)) is JobStatus.QUEUED
    other = open_process()
    assert other.take(timeout=0.05) is None
    other.clock.advance(POLICY.backoff_seconds * 2)
    assert other.take() == Ping(job_id=job.id)


# Waking ------------------------------------------------------------------------------------------


def test_waiting_worker_wakes_on_put_without_polling(
    open_process: OpenProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a poll interval this long, only the put() itself can wake the worker in time.
    monkeypatch.setattr(sqlite_queue, "POLL_SECONDS", HANG_GUARD * 10)
    process = open_process()
    taken: list[object] = []
    getter = threading.Thread(target=lambda: taken.append(process.queue.get(timeout=None)))
    getter.start()
    job = process.submit()
    getter.join(HANG_GUARD)
    assert not getter.is_alive()
    assert taken == [Ping(job_id=job.id)]


def test_worker_sees_job_queued_by_another_process(open_process: OpenProcess) -> None:
    worker = open_process()
    web = open_process()
    taken: list[object] = []
    getter = threading.Thread(target=lambda: taken.append(worker.queue.get(timeout=HANG_GUARD)))
    getter.start()
    job = web.submit()
    getter.join(HANG_GUARD)
    assert taken == [Ping(job_id=job.id)]


def test_long_poll_sees_change_made_by_another_process(open_process: OpenProcess) -> None:
    web = open_process()
    worker = open_process()
    job = web.submit()
    seen: list[Job] = []
    waiter = threading.Thread(
        target=lambda: seen.append(web.store.wait_for_change(job.id, 1, HANG_GUARD))
    )
    waiter.start()
    assert worker.take() is not None
    waiter.join(HANG_GUARD)
    assert [j.status for j in seen] == [JobStatus.RUNNING]


# Contention --------------------------------------------------------------------------------------


def test_two_processes_writing_progress_never_lock(
    open_process: OpenProcess,
) -> None:
    # Two processes, four worker threads each, every thread reporting progress of its own job:
    # their writes contend for the one SQLite file lock, which busy_timeout must absorb.
    processes = [open_process(), open_process()]
    jobs = [(process, process.submit()) for process in processes for _ in range(4)]
    for process, _ in jobs:
        assert process.take() is not None
    reports = 100
    errors: list[BaseException] = []

    def report(process: Process, job: Job) -> None:
        try:
            for done in range(1, reports + 1):
                progress = Progress(done, reports)
                process.store.update(
                    job.id,
                    partial(
                        transitions.record_progress, progress=progress, now=process.clock.now()
                    ),
                )
        except Exception as error:  # noqa: BLE001 - every error is asserted on below
            errors.append(error)

    threads = [threading.Thread(target=report, args=pair) for pair in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert errors == []
    for process, job in jobs:
        record = process.store.get(job.id)
        assert record.progress.done == reports
        assert record.version == 2 + reports


# Durability --------------------------------------------------------------------------------------


def count_fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make os.fdatasync record each call (and still sync); return the list it records to."""
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(descriptor: int) -> None:
        syncs.append(descriptor)
        real_fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    return syncs


def test_full_fsyncs_accepts_not_worker_writes(
    open_process: OpenProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = count_fdatasyncs(monkeypatch)
    process = open_process("full")

    job = process.submit()
    after_accept = len(syncs)
    assert process.take() is not None
    progress = Progress(1, 2)
    process.store.update(
        job.id, partial(transitions.record_progress, progress=progress, now=process.clock.now())
    )
    after_worker_writes = len(syncs)
    request_cancel(process, job.id)

    assert after_accept == 1
    assert after_worker_writes == after_accept
    assert len(syncs) == after_accept + 1


def test_full_fsyncs_finish_before_returning(
    open_process: OpenProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = count_fdatasyncs(monkeypatch)
    monkeypatch.setattr(sqlite_queue, "POLL_SECONDS", 0.01)
    process = open_process("full")
    job = process.submit()
    assert process.take() is not None
    outcome = HandlerOutcome("only", JobStatus.SUCCEEDED)
    assert process.store.update(job.id, finish_with(process, outcome)) is JobStatus.SUCCEEDED
    assert len(syncs) == 2  # the accept's and the finish's


def test_idle_worker_fsyncs_progress(
    open_process: OpenProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = count_fdatasyncs(monkeypatch)
    monkeypatch.setattr(sqlite_queue, "POLL_SECONDS", 0.01)
    process = open_process("full")
    job = process.submit()
    assert process.take() is not None
    progress = Progress(1, 2)
    process.store.update(
        job.id, partial(transitions.record_progress, progress=progress, now=process.clock.now())
    )
    assert len(syncs) == 1  # the accept's

    # A worker that waits in vain for the next job syncs the progress.
    assert process.queue.get(timeout=0.1) is None
    assert len(syncs) == 2


def test_normal_never_fsyncs(open_process: OpenProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    monkeypatch.setattr(os, "fdatasync", syncs.append)
    process = open_process("normal")
    job = process.submit()
    request_cancel(process, job.id)
    assert syncs == []


# The file and its schema -------------------------------------------------------------------------


def test_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(BackendUnavailable, match="schema version 99"):
        SqliteDatabase(path)


def test_closed_database_raises_backend_unavailable(open_process: OpenProcess) -> None:
    process = open_process()
    job = process.submit()
    process.database.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        process.store.get(job.id)


@pytest.mark.parametrize(
    ("query", "params", "index"),
    [
        (sqlite_queue._NEXT_READY, {"now": 1.0}, "unfinished_jobs"),
        (sqlite_queue._EXPIRED, (1.0,), "unfinished_jobs"),
        (f"SELECT id {FINISHED_BEFORE}", {"id_bound": "0", "before": 1.0}, "(id<?)"),
        ("SELECT id FROM jobs WHERE owner = ? ORDER BY id DESC", ("me",), "jobs_by_owner"),
    ],
)
def test_queries_use_their_index(
    open_process: OpenProcess, query: str, params: object, index: str
) -> None:
    process = open_process()
    plan = process.database.read(f"EXPLAIN QUERY PLAN {query}", params)  # type: ignore[arg-type]
    assert any(index in str(step) for step in plan), plan


def test_fast_record_encoding_matches_to_record() -> None:
    job = transitions.new_job("job-1", "ping", ["a", "b"], 1.0, owner="o", idempotency_key="k")
    transitions.start(job, 2.0)
    transitions.record_progress(job, Progress(1, 3, "one"), 2.5)
    job.attempts = (*job.attempts, Attempt(9, 1.0, 2.0, ErrorInfo(ErrorType.TIMEOUT, "slow")))
    job.handlers = (HandlerOutcome("a", JobStatus.SUCCEEDED, output={"x": [1, 2]}),)
    job.result = {"x": [1, 2]}
    job.files = ("a.txt",)
    assert FAST_ENCODING
    assert record_of(job) == job.to_record()


def test_stale_idempotency_claim_is_free_after_a_minute(open_process: OpenProcess) -> None:
    process = open_process()
    assert process.store.claim_idempotency_key(None, "upload-9") is None
    process.clock.advance(59)
    with pytest.raises(IdempotencyKeyInFlight):
        process.store.claim_idempotency_key(None, "upload-9")
    process.clock.advance(2)  # the request that claimed it died with its process
    assert process.store.claim_idempotency_key(None, "upload-9") is None
