"""The queue and status-store contract, written once and run against every backend."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from dependency_injector import providers

from containers.application import build_container
from handlers.registry import Registry
from queueing import transitions
from queueing.errors import IdempotencyKeyInFlight, JobNotFound, JobStateConflict, QueueFull
from queueing.job_queue import JobQueue
from queueing.jobs import (
    HandlerOutcome,
    Job,
    JobQuery,
    JobStatus,
    Notification,
    Progress,
    new_job_id,
)
from queueing.status_store import StatusStore
from queueing.transitions import RetryPolicy
from tests.conftest import make_settings
from tests.support import ManualClock

BACKENDS = ["memory", "sqlite"]
NOW = 1_800_000_000.0


@dataclass(frozen=True, kw_only=True)
class Ping(Notification):
    number: int = 0


def ping_registry() -> Registry:
    """A registry with the `ping` job type, so durable queues can rebuild its notifications."""
    registry = Registry()
    registry.job_type("ping", Ping, lambda submission, intake: Ping(job_id=intake.job_id))
    registry.handler(Ping, "only", lambda notification, context: None)
    registry.freeze()
    return registry


@dataclass
class Backend:
    queue: JobQueue
    store: StatusStore
    clock: ManualClock


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    settings = make_settings(tmp_path, {"queue": {"backend": request.param, "max_size": 3}})
    container = build_container(settings)
    clock = ManualClock()
    container.clock.override(clock)
    container.registry.override(providers.Object(ping_registry()))
    yield Backend(container.job_queue(), container.status_store(), clock)
    container.job_queue().close()
    container.status_store().close()


def make_job(backend: Backend, *, owner: str | None = None, key: str | None = None) -> Job:
    backend.clock.advance(0.01)
    job_id = new_job_id(backend.clock.now())
    return transitions.new_job(
        job_id, "ping", ["only"], backend.clock.now(), owner=owner, idempotency_key=key
    )


def submit(backend: Backend, **kwargs: str | None) -> Job:
    """Accept a job the way `JobService.submit` does: reserve, create, put."""
    job = make_job(backend, **kwargs)
    notification = Ping(job_id=job.id)
    backend.queue.reserve()
    backend.store.create(job, notification.to_payload())
    backend.queue.put(notification)
    return job


def fail_attempt(backend: Backend, notification: Notification, *, backoff: float) -> float:
    """Do what a worker does when an attempt fails: start, fail, put_later, task_done.

    Returns the time of the retry.
    """
    job_id = notification.job_id
    backend.store.update(job_id, partial(transitions.start, now=backend.clock.now()))
    status = backend.store.update(
        job_id,
        partial(
            transitions.finish,
            outcomes=[HandlerOutcome("only", JobStatus.FAILED, "boom")],
            files=[],
            now=backend.clock.now(),
            policy=RetryPolicy(max_attempts=3, backoff_seconds=backoff),
            rng=random.Random(1),
        ),
    )
    assert status is JobStatus.QUEUED
    retry_at = backend.store.get(job_id).next_attempt_at
    assert retry_at is not None
    backend.queue.put_later(notification, retry_at)
    backend.queue.task_done(notification)
    return retry_at


def run_to_success(backend: Backend, notification: Notification) -> None:
    """Do what a worker does with a notification it took: start, succeed, task_done."""
    backend.store.update(notification.job_id, partial(transitions.start, now=backend.clock.now()))
    backend.store.update(
        notification.job_id,
        partial(
            transitions.finish,
            outcomes=[HandlerOutcome("only", JobStatus.SUCCEEDED, output={"pong": True})],
            files=[],
            now=backend.clock.now(),
            policy=RetryPolicy(),
            rng=random.Random(1),
        ),
    )
    backend.queue.task_done(notification)


# Queue -----------------------------------------------------------------------------------------


def test_queue_hands_out_notifications_in_order(backend: Backend) -> None:
    jobs = [submit(backend) for _ in range(3)]
    taken = [backend.queue.get(timeout=1) for _ in jobs]
    assert [n.job_id for n in taken if n] == [job.id for job in jobs]


def test_queue_refuses_past_max_size(backend: Backend) -> None:
    for _ in range(3):
        submit(backend)
    with pytest.raises(QueueFull):
        backend.queue.reserve()
    assert backend.queue.depth() == 3


def test_released_reservation_frees_room(backend: Backend) -> None:
    for _ in range(2):
        submit(backend)
    backend.queue.reserve()
    with pytest.raises(QueueFull):
        backend.queue.reserve()
    backend.queue.release()
    backend.queue.reserve()


def test_get_times_out_on_empty_queue(backend: Backend) -> None:
    assert backend.queue.get(timeout=0.01) is None


def test_retry_waits_until_due(backend: Backend) -> None:
    job = submit(backend)
    notification = backend.queue.get(timeout=1)
    assert notification is not None
    retry_at = fail_attempt(backend, notification, backoff=5)
    assert retry_at == pytest.approx(backend.clock.now() + 5, abs=1.5)
    assert backend.queue.get(timeout=0.01) is None
    backend.clock.advance(7)
    promote = getattr(backend.queue, "promote_due", None)
    if promote is not None:
        promote()
    again = backend.queue.get(timeout=1)
    assert again is not None
    assert again.job_id == job.id


def test_join_waits_for_task_done(backend: Backend) -> None:
    submit(backend)
    assert not backend.queue.join(0.01)
    notification = backend.queue.get(timeout=1)
    assert notification is not None
    run_to_success(backend, notification)
    assert backend.queue.join(1)


def test_close_wakes_waiting_getter(backend: Backend) -> None:
    results: list[object] = []
    getter = threading.Thread(target=lambda: results.append(backend.queue.get()))
    getter.start()
    backend.queue.close()
    getter.join(5)
    assert not getter.is_alive()
    assert results == [None]


# Status store ----------------------------------------------------------------------------------


def test_store_returns_copies(backend: Backend) -> None:
    job = submit(backend)
    copy = backend.store.get(job.id)
    copy.status = JobStatus.FAILED
    assert backend.store.get(job.id).status is JobStatus.QUEUED


def test_unknown_job_raises_not_found(backend: Backend) -> None:
    with pytest.raises(JobNotFound):
        backend.store.get(new_job_id(NOW))
    with pytest.raises(JobNotFound):
        backend.store.update(new_job_id(NOW), lambda job: True)


def test_update_raises_version_only_on_change(backend: Backend) -> None:
    job = submit(backend)
    assert backend.store.update(job.id, lambda record: None) is None
    assert backend.store.get(job.id).version == 1
    started = backend.store.update(job.id, partial(transitions.start, now=NOW))
    assert started is not None
    assert backend.store.get(job.id).version == 2


def test_failing_change_saves_nothing(backend: Backend) -> None:
    job = submit(backend)
    backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    with pytest.raises(JobStateConflict):
        backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    assert backend.store.get(job.id).version == 2


def test_wait_for_change_wakes_on_update(backend: Backend) -> None:
    job = submit(backend)
    seen: list[Job] = []
    waiter = threading.Thread(
        target=lambda: seen.append(backend.store.wait_for_change(job.id, 1, 30))
    )
    waiter.start()
    backend.store.update(job.id, partial(transitions.start, now=NOW))
    waiter.join(30)
    assert [j.status for j in seen] == [JobStatus.RUNNING]


def test_wait_for_change_returns_at_once_when_newer(backend: Backend) -> None:
    job = submit(backend)
    backend.store.update(job.id, partial(transitions.start, now=NOW))
    assert backend.store.wait_for_change(job.id, 1, 30).version == 2


def test_wait_for_change_times_out_with_current_job(backend: Backend) -> None:
    job = submit(backend)
    assert backend.store.wait_for_change(job.id, 1, 0.01).version == 1


def test_list_pages_newest_first(backend: Backend) -> None:
    jobs = [submit(backend) for _ in range(3)]
    first = backend.store.list_jobs(JobQuery(limit=2))
    assert [j.id for j in first] == [jobs[2].id, jobs[1].id]
    rest = backend.store.list_jobs(JobQuery(limit=2, before=first[-1].id))
    assert [j.id for j in rest] == [jobs[0].id]


def test_list_filters_by_status_and_owner(backend: Backend) -> None:
    mine = submit(backend, owner="me")
    submit(backend, owner="other")
    backend.store.update(mine.id, partial(transitions.request_cancel, now=NOW))
    canceled = backend.store.list_jobs(JobQuery(status=JobStatus.CANCELED))
    assert [j.id for j in canceled] == [mine.id]
    assert [j.id for j in backend.store.list_jobs(JobQuery(owner="me"))] == [mine.id]


def test_purge_removes_only_old_finished_jobs(backend: Backend) -> None:
    old_done = submit(backend)
    old_running = submit(backend)
    backend.store.update(old_done.id, partial(transitions.request_cancel, now=NOW))
    backend.store.update(old_running.id, partial(transitions.start, now=NOW))
    backend.clock.advance(100)
    young = submit(backend)
    backend.store.update(young.id, partial(transitions.request_cancel, now=NOW))
    assert backend.store.purge(created_before=backend.clock.now() - 50) == [old_done.id]
    with pytest.raises(JobNotFound):
        backend.store.get(old_done.id)
    assert backend.store.get(old_running.id).status is JobStatus.RUNNING
    assert backend.store.get(young.id).status is JobStatus.CANCELED


def test_delete_removes_job(backend: Backend) -> None:
    job = submit(backend)
    backend.store.delete(job.id)
    with pytest.raises(JobNotFound):
        backend.store.get(job.id)


def test_idempotency_key_claim_then_replay(backend: Backend) -> None:
    assert backend.store.claim_idempotency_key("me", "key-1") is None
    with pytest.raises(IdempotencyKeyInFlight):
        backend.store.claim_idempotency_key("me", "key-1")
    job = submit(backend, owner="me", key="key-1")
    replay = backend.store.claim_idempotency_key("me", "key-1")
    assert replay is not None
    assert replay.id == job.id


def test_idempotency_keys_are_scoped_per_owner(backend: Backend) -> None:
    submit(backend, owner="me", key="shared")
    assert backend.store.claim_idempotency_key("other", "shared") is None


def test_released_idempotency_key_can_be_claimed_again(backend: Backend) -> None:
    assert backend.store.claim_idempotency_key(None, "key-2") is None
    backend.store.release_idempotency_key(None, "key-2")
    assert backend.store.claim_idempotency_key(None, "key-2") is None


def test_deleted_job_frees_its_idempotency_key(backend: Backend) -> None:
    job = submit(backend, key="key-3")
    backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    backend.store.delete(job.id)
    assert backend.store.claim_idempotency_key(None, "key-3") is None


# More of the contract --------------------------------------------------------------------------


def test_record_round_trips_every_field(backend: Backend) -> None:
    job = make_job(backend, owner="owner-digest", key="key-9")
    job.request_digest = "sha256:abc"
    backend.queue.reserve()
    backend.store.create(job, Ping(job_id=job.id, number=7).to_payload())
    backend.queue.put(Ping(job_id=job.id, number=7))
    assert backend.store.get(job.id) == job

    expected = job.copy()
    now = backend.clock.now()
    progress = Progress(2, 4, "half way")
    outcome = HandlerOutcome("only", JobStatus.SUCCEEDED, output={"sizes": [1, 2]})
    for change in (
        partial(transitions.start, now=now),
        partial(transitions.record_progress, progress=progress, now=now + 1),
        partial(
            transitions.finish,
            outcomes=[outcome],
            files=["a.txt"],
            now=now + 2,
            policy=RetryPolicy(),
            rng=random.Random(1),
        ),
    ):
        assert backend.store.update(job.id, change) is not None
        assert change(expected) is not None
        expected.version += 1
    stored = backend.store.get(job.id)
    assert stored == Job.from_record(expected.to_record())
    assert stored.result == {"sizes": [1, 2]}
    assert stored.files == ("a.txt",)


def test_queue_rebuilds_the_notification_it_was_given(backend: Backend) -> None:
    job = make_job(backend)
    backend.queue.reserve()
    backend.store.create(job, Ping(job_id=job.id, number=42).to_payload())
    backend.queue.put(Ping(job_id=job.id, number=42))
    assert backend.queue.get(timeout=1) == Ping(job_id=job.id, number=42)


def test_taken_job_is_not_handed_out_again(backend: Backend) -> None:
    submit(backend)
    assert backend.queue.get(timeout=1) is not None
    assert backend.queue.get(timeout=0.05) is None


def test_retry_is_never_refused_for_room(backend: Backend) -> None:
    for _ in range(3):
        submit(backend)
    notification = backend.queue.get(timeout=1)
    assert notification is not None
    backend.queue.reserve()  # the taken job left room for one more
    fail_attempt(backend, notification, backoff=60)
    assert backend.queue.depth() == 3


def test_get_after_close_returns_none(backend: Backend) -> None:
    submit(backend)
    backend.queue.close()
    assert backend.queue.get(timeout=0.05) is None


def test_drain_returns_queued_jobs_unless_durable(backend: Backend) -> None:
    jobs = [submit(backend) for _ in range(2)]
    backend.queue.close()
    drained = backend.queue.drain()
    if backend.queue.durable:
        assert drained == []
        assert [backend.store.get(job.id).status for job in jobs] == [JobStatus.QUEUED] * 2
    else:
        assert [n.job_id for n in drained] == [job.id for job in jobs]


def test_update_returns_what_change_returned(backend: Backend) -> None:
    job = submit(backend)
    started = backend.store.update(job.id, partial(transitions.start, now=NOW))
    assert isinstance(started, transitions.StartedAttempt)
    assert started.number == 1


def test_change_to_finished_job_saves_nothing(backend: Backend) -> None:
    job = submit(backend)
    backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    assert backend.store.update(job.id, partial(transitions.start, now=NOW)) is None
    stored = backend.store.get(job.id)
    assert stored.status is JobStatus.CANCELED
    assert stored.version == 2


def test_concurrent_updates_lose_no_change(backend: Backend) -> None:
    job = submit(backend)
    threads, changes = 4, 50

    def count_one(record: Job) -> bool:
        record.progress = Progress(record.progress.done + 1)
        return True

    def hammer() -> None:
        for _ in range(changes):
            backend.store.update(job.id, count_one)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    stored = backend.store.get(job.id)
    assert stored.progress.done == threads * changes
    assert stored.version == 1 + threads * changes


def test_wait_for_unknown_job_raises_not_found(backend: Backend) -> None:
    with pytest.raises(JobNotFound):
        backend.store.wait_for_change(new_job_id(NOW), 1, 0.01)


def test_delete_wakes_waiter_with_not_found(backend: Backend) -> None:
    job = submit(backend)
    backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            backend.store.wait_for_change(job.id, 2, 30)
        except JobNotFound as error:
            errors.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    backend.store.delete(job.id)
    waiter.join(30)
    assert not waiter.is_alive()
    assert len(errors) == 1


def test_delete_unknown_job_raises_not_found(backend: Backend) -> None:
    with pytest.raises(JobNotFound):
        backend.store.delete(new_job_id(NOW))


def test_list_filters_by_type_and_cursor(backend: Backend) -> None:
    jobs = [submit(backend) for _ in range(3)]
    assert backend.store.list_jobs(JobQuery(type="other")) == []
    older = backend.store.list_jobs(JobQuery(type="ping", before=jobs[2].id))
    assert [j.id for j in older] == [jobs[1].id, jobs[0].id]


def test_purged_job_frees_its_idempotency_key(backend: Backend) -> None:
    job = submit(backend, key="key-4")
    backend.store.update(job.id, partial(transitions.request_cancel, now=NOW))
    backend.clock.advance(100)
    assert backend.store.purge(created_before=backend.clock.now()) == [job.id]
    assert backend.store.claim_idempotency_key(None, "key-4") is None


def test_list_filters_by_unfinished_status(backend: Backend) -> None:
    queued = submit(backend)
    running = submit(backend)
    backend.store.update(running.id, partial(transitions.start, now=NOW))
    assert [j.id for j in backend.store.list_jobs(JobQuery(status=JobStatus.QUEUED))] == [queued.id]
    assert [j.id for j in backend.store.list_jobs(JobQuery(status=JobStatus.RUNNING))] == [
        running.id
    ]


def test_local_files_are_flushed_when_durable(tmp_path: Path) -> None:
    from queueing.local_files import LocalFileStore

    store = LocalFileStore(tmp_path, durable=True)
    job_id = new_job_id(NOW)
    assert store.save(job_id, "upload", b"payload") == 7
    with store.open(job_id, "upload") as stored:
        assert stored.read() == b"payload"


def test_full_sqlite_settings_make_file_store_durable(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, {"queue": {"backend": "sqlite", "sqlite_synchronous": "full"}}
    )
    assert build_container(settings).file_store()._durable is True
    assert build_container(make_settings(tmp_path)).file_store()._durable is False
