"""The engine's hot paths after their speed-ups: ids, cancel tokens, records and documents."""

from __future__ import annotations

import json
import threading

from queueing.context import CancelToken
from queueing.documents import EncodedDocuments, job_document
from queueing.jobs import JobIdGenerator, JobStatus, job_id_time
from queueing.memory import MemoryQueue, MemoryStatusStore
from queueing.transitions import new_job, start
from tests.support import HANG_GUARD, NOW, ManualClock, Work


def test_id_generator_keeps_order_across_random_blocks() -> None:
    generator = JobIdGenerator()
    ids = [generator.new(NOW) for _ in range(2000)]  # several blocks of random bytes
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(job_id_time(job_id) == NOW for job_id in ids)


def test_cancel_token_wakes_a_waiting_thread() -> None:
    token = CancelToken()
    entered = threading.Event()
    woke: list[bool] = []

    def wait() -> None:
        entered.set()
        woke.append(token.wait(HANG_GUARD))

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert entered.wait(HANG_GUARD)
    token.set("canceled")
    waiter.join(HANG_GUARD)
    assert woke == [True]


def test_cancel_token_keeps_the_first_reason() -> None:
    token = CancelToken()
    assert not token.is_set()
    assert token.wait(0) is False
    token.set("timeout")
    token.set("canceled")
    assert token.is_set()
    assert token.reason == "timeout"
    assert token.wait(0) is True


def test_update_replaces_record_and_keeps_earlier_copies() -> None:
    store = MemoryStatusStore()
    store.create(new_job("job-1", "work", ["a"], NOW))
    before = store.get("job-1")
    started = store.update("job-1", lambda job: start(job, NOW + 1))
    after = store.get("job-1")
    assert started is not None
    assert before.status is JobStatus.QUEUED
    assert before.version == 1
    assert after.status is JobStatus.RUNNING
    assert after.version == 2


def test_unchanged_update_keeps_version() -> None:
    store = MemoryStatusStore()
    store.create(new_job("job-1", "work", ["a"], NOW))
    assert store.update("job-1", lambda job: None) is None
    assert store.get("job-1").version == 1


def test_queue_get_times_out_on_an_idle_queue() -> None:
    queue = MemoryQueue(max_size=2, clock=ManualClock())
    assert queue.get(timeout=0.01) is None
    queue.reserve()
    queue.put(Work(job_id="job-1"))
    taken = queue.get(timeout=0)
    assert taken is not None
    assert taken.job_id == "job-1"


def test_close_wakes_waiting_getter() -> None:
    queue = MemoryQueue(max_size=2, clock=ManualClock())
    results: list[object] = []
    getter = threading.Thread(target=lambda: results.append(queue.get()))
    getter.start()
    queue.close()
    getter.join(HANG_GUARD)
    assert results == [None]
    assert queue.get(timeout=0) is None
    assert queue.drain() == []


def test_encoded_document_is_reused_until_version_changes() -> None:
    documents = EncodedDocuments()
    job = new_job("01890000-0000-7000-8000-000000000000", "work", ["a"], NOW)
    first = documents.encode(job)
    assert documents.encode(job) is first
    assert json.loads(first) == job_document(job)

    start(job, NOW + 1)
    job.version = 2
    second = documents.encode(job)
    assert json.loads(second)["status"] == "running"


def test_encoded_documents_drop_the_oldest_past_the_limit() -> None:
    documents = EncodedDocuments(max_entries=2)
    jobs = [new_job(f"job-{number}", "work", ["a"], NOW) for number in range(3)]
    texts = [documents.encode(job) for job in jobs]
    assert documents.encode(jobs[2]) is texts[2]
    assert documents.encode(jobs[0]) is not texts[0]
