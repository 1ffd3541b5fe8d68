"""The job service: what the HTTP routes do to jobs, free of any web framework."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from queueing import transitions
from queueing.clock import Clock
from queueing.errors import (
    JobExpired,
    JobNotFound,
    JobStateConflict,
    ShuttingDown,
    WaitSlotsExhausted,
)
from queueing.estimates import DurationStats
from queueing.files import FileStore
from queueing.job_queue import JobQueue
from queueing.jobs import Job, JobIdGenerator, JobQuery, JobStatus, Notification, job_id_time
from queueing.status_store import StatusStore

logger = logging.getLogger(__name__)

# How often a long wait checks whether its client went away, in seconds.
DISCONNECT_CHECK_SECONDS = 1.0
# Files without a job record are removed once their job id is this old (seconds), far longer
# than accepting a request takes, and the folders are scanned this often.
ORPHAN_MIN_AGE = 3600.0
ORPHAN_SWEEP_SECONDS = 3600.0


@dataclass(frozen=True)
class ServiceSettings:
    retention_seconds: float = 86400.0
    long_poll_max_seconds: float = 30.0
    max_waiting_requests: int = 4
    workers: int = 4  # worker threads serving this queue, for Retry-After estimates


class JobService:
    """Submits, reads, waits for, cancels, lists and deletes jobs.

    `owner` arguments scope every lookup: with API keys on, a job of another key is reported
    as not found, exactly like a job that never existed.
    """

    def __init__(
        self,
        *,
        store: StatusStore,
        queue: JobQueue,
        files: FileStore,
        clock: Clock,
        durations: DurationStats,
        settings: ServiceSettings,
        cancel_running: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.files = files
        self.clock = clock
        self.settings = settings
        self._durations = durations
        self._cancel_running = cancel_running
        self._wait_slots = threading.BoundedSemaphore(max(1, settings.max_waiting_requests))
        self._accepting = threading.Event()
        self._accepting.set()
        self._ids = JobIdGenerator()

    # Accepting ---------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting.is_set()

    def stop_accepting(self) -> None:
        self._accepting.clear()

    def new_job_id(self) -> str:
        """Return a fresh job id; ids from one service sort in the order they were made."""
        return self._ids.new(self.clock.now())

    def submit(self, job: Job, notification: Notification) -> Job:
        """Write the job's record, then enqueue it; on any failure leave no record behind."""
        if not self.accepting:
            raise ShuttingDown("the service is shutting down and accepts no new jobs")
        self.queue.reserve()
        try:
            payload = notification.to_payload() if self.queue.durable else None
            self.store.create(job, payload)
        except BaseException:
            self.queue.release()
            raise
        try:
            self.queue.put(notification)
        except BaseException:
            self.queue.release()
            self.store.delete(job.id)
            raise
        logger.debug("Job %s (%s) accepted.", job.id, job.type)
        return job

    # Reading -----------------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None) -> Job:
        """Return a job; raises JobNotFound, or JobExpired for an id past the retention period."""
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            raise self._missing(job_id) from None
        if owner is not None and job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def _missing(self, job_id: str) -> JobNotFound | JobExpired:
        created = job_id_time(job_id)
        if created is not None and created < self.clock.now() - self.settings.retention_seconds:
            return JobExpired(job_id)
        return JobNotFound(job_id)

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str | None]:
        """Return a page of jobs, newest first, and the cursor of the next page (or None)."""
        wider = JobQuery(query.status, query.type, query.owner, query.limit + 1, query.before)
        jobs = self.store.list_jobs(wider)
        if len(jobs) > query.limit:
            jobs = jobs[: query.limit]
            return jobs, jobs[-1].id
        return jobs, None

    def clamp_wait(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.settings.long_poll_max_seconds))

    def wait(
        self,
        job_id: str,
        owner: str | None,
        seconds: float,
        gone: Callable[[], bool] = lambda: False,
    ) -> Job:
        """Return the job once it is finished or changes, or after `seconds` (clamped).

        `gone` returns whether the client disconnected, so its slot is freed within a second.
        Raises WaitSlotsExhausted when `max_waiting_requests` waits are already open.
        """
        job = self.get(job_id, owner)
        if job.status.is_final or seconds <= 0:
            return job
        if not self._wait_slots.acquire(blocking=False):
            raise WaitSlotsExhausted("every long-poll slot of this process is taken")
        try:
            deadline = self.clock.monotonic() + self.clamp_wait(seconds)
            while True:
                remaining = deadline - self.clock.monotonic()
                step = min(remaining, DISCONNECT_CHECK_SECONDS)
                changed = self.store.wait_for_change(job_id, job.version, max(0.0, step))
                if changed.version != job.version or remaining <= step or gone():
                    return changed
        finally:
            self._wait_slots.release()

    def wait_for_end(self, job_id: str, seconds: float) -> Job | None:
        """Wait up to `seconds` for a job to finish; None when no wait slot is free."""
        if not self._wait_slots.acquire(blocking=False):
            return None
        try:
            deadline = self.clock.monotonic() + self.clamp_wait(seconds)
            job = self.store.get(job_id)
            while not job.status.is_final:
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    break
                job = self.store.wait_for_change(job_id, job.version, remaining)
            return job
        finally:
            self._wait_slots.release()

    def take_wait_slot(self) -> WaitSlot | None:
        """Take a wait slot for a long-lived stream, or return None when none is free."""
        if not self._wait_slots.acquire(blocking=False):
            return None
        return WaitSlot(self._wait_slots)

    def retry_after(self, job: Job) -> int:
        """Estimate, in whole seconds (at least 1), when it is worth asking about `job` again."""
        remaining: float | None = None
        if job.status is JobStatus.RUNNING:
            now = self.clock.now()
            if job.eta is not None:
                remaining = job.eta - now
            elif job.started_at is not None:
                remaining = self._durations.average(job.type) - (now - job.started_at)
        elif job.next_attempt_at is not None:
            remaining = job.next_attempt_at - self.clock.now() + self._durations.average(job.type)
        return self._durations.retry_after(
            job.type,
            queued_ahead=self.queue.depth(),
            workers=self.settings.workers,
            remaining=remaining,
        )

    def retry_after_backlog(self) -> int:
        """Estimate, in whole seconds, when the queue may have room again."""
        return self._durations.retry_after(
            "", queued_ahead=self.queue.depth(), workers=self.settings.workers
        )

    # Changing ----------------------------------------------------------------------------------

    def record_accepted_status(self, job_id: str, status: int) -> None:
        self.store.update(job_id, partial(transitions.set_accepted_status, status=status))

    def cancel(self, job_id: str, owner: str | None) -> Job:
        """Cancel a queued job at once, or ask a running one to stop at its next checkpoint."""
        self.get(job_id, owner)
        status = self.store.update(
            job_id, partial(transitions.request_cancel, now=self.clock.now())
        )
        if status is JobStatus.RUNNING and self._cancel_running is not None:
            self._cancel_running(job_id)
        logger.info("Job %s: cancel requested.", job_id)
        return self.store.get(job_id)

    def delete(self, job_id: str, owner: str | None) -> None:
        """Remove a finished job and its files; a queued or running one is a conflict."""
        job = self.get(job_id, owner)
        if not job.status.is_final:
            raise JobStateConflict(
                job_id, f"job {job_id} is {job.status}; cancel it first", status=job.status
            )
        self.store.delete(job_id)
        self.files.delete_job(job_id)
        logger.info("Job %s deleted.", job_id)

    def remove_orphan_files(self) -> int:
        """Delete the files of jobs that have no record, once their id is `ORPHAN_MIN_AGE` old.

        A job's upload is stored before its record is written, so a young folder without a
        record may belong to a request that is still being accepted. Those are left alone.
        """
        cutoff = self.clock.now() - ORPHAN_MIN_AGE
        removed = 0
        for job_id in self.files.job_ids():
            created = job_id_time(job_id)
            if created is None or created >= cutoff:
                continue
            try:
                self.store.get(job_id)
            except JobNotFound:
                self.files.delete_job(job_id)
                removed += 1
        if removed:
            logger.info("Removed the files of %d jobs that have no record.", removed)
        return removed

    def purge_expired(self) -> int:
        """Remove finished jobs older than the retention period, with their files."""
        cutoff = self.clock.now() - self.settings.retention_seconds
        purged = self.store.purge(cutoff)
        for job_id in purged:
            self.files.delete_job(job_id)
        if purged:
            logger.info("Purged %d jobs past the retention period.", len(purged))
        return len(purged)


class WaitSlot:
    """One taken wait slot; `release` frees it, and releasing it again does nothing.

    A stream's slot is released both when its generator ends and when the response closes,
    because a response that is never iterated (a HEAD request) never runs the generator.
    """

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()  # guards _held
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._semaphore.release()


class Housekeeper:
    """A daemon thread that purges expired jobs every `interval` seconds.

    It also removes the files of jobs that have no record, at start and then every
    `ORPHAN_SWEEP_SECONDS`: a crash between storing an upload and writing the job's record
    leaves such files, and so does a restart of the memory backend.
    """

    def __init__(self, service: JobService, interval: float) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="backburner-housekeeper", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        next_sweep = time.monotonic()
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    self._service.remove_orphan_files()
                    next_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
                self._service.purge_expired()
            # Housekeeping must outlive a failing purge (a store that is briefly unreachable).
            except Exception:
                logger.exception("Housekeeping failed; trying again later.")
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
