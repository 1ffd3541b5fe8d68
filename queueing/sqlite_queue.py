"""The SQLite queue: queued rows of the `jobs` table, handed to workers under a lease."""

from __future__ import annotations

import heapq
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from queueing import transitions
from queueing.clock import Clock
from queueing.errors import BackburnerError, BackendUnavailable, QueueFull
from queueing.job_queue import JobQueue
from queueing.jobs import ErrorInfo, ErrorType, Job, JobStatus, Notification
from queueing.sqlite import UNFINISHED_CONDITION, SqliteDatabase
from queueing.sqlite_records import apply_change, decode_job, write_params
from queueing.transitions import RetryPolicy

logger = logging.getLogger(__name__)

Decode = Callable[[str, Mapping[str, Any]], Notification]

# How often a waiting worker looks for jobs that another process queued (or that became due
# in another process). Jobs submitted or retried in this process wake it at once.
POLL_SECONDS = 0.2
# How often expired leases are looked for. Each look is one indexed read.
REAP_SECONDS = 1.0
# How often the room count is read back from the file, to see what other processes did.
RECOUNT_SECONDS = 1.0

LOST_LEASE = ErrorInfo(
    ErrorType.WORKER_LOST,
    "its worker stopped renewing its lease; the process probably died",
)

# Queued rows hold no lease: a lease is taken together with the start of an attempt, and any
# change that ends the running status ends the lease too.
_READY = f"{UNFINISHED_CONDITION} AND status = 'queued' AND due_at <= :now"
_ANY_READY = f"SELECT 1 FROM jobs WHERE {_READY} LIMIT 1"
_NEXT_READY = f"SELECT payload, record FROM jobs WHERE {_READY} ORDER BY id LIMIT 1"
_LEASE_AND_START = """
    UPDATE jobs SET lease_owner = :owner, lease_expires = :expires, status = :status,
        version = :version, due_at = :due_at, record = :record
    WHERE id = :id
"""
_RENEW = "UPDATE jobs SET lease_expires = ? WHERE id = ? AND lease_owner = ?"
_EXPIRED = (
    f"SELECT id FROM jobs WHERE {UNFINISHED_CONDITION} AND status = 'running' AND lease_expires < ?"
)


class SqliteQueue(JobQueue):
    """Queued jobs are rows of the `jobs` table; taking one leases it to this process.

    `put` writes nothing: `SqliteStatusStore.create` already committed the row, so `put` only
    wakes a waiting worker of this process. `get` takes the oldest ready row: in one
    transaction it starts the job's next attempt (`transitions.start`) and leases the row to
    this process for `lease_seconds`. The worker pool renews the leases of the jobs it runs,
    and the change that ends a job's running status ends its lease.

    A running row whose lease ran out belonged to a process that died or stalled that long.
    `get` gives it back to the queue with `transitions.requeue`, which fails it for good after
    `max_attempts`. So a job that kills its process every time cannot loop forever.
    """

    name = "sqlite"
    durable = True
    shared = True  # `backburner worker` processes may take jobs from the same file

    def __init__(
        self,
        database: SqliteDatabase,
        *,
        max_size: int,
        lease_seconds: float,
        policy: RetryPolicy,
        decode: Decode,
        clock: Clock,
    ) -> None:
        self._db = database
        self._max_size = max_size
        self._lease_seconds = lease_seconds
        self._policy = policy
        self._decode = decode
        self._clock = clock
        # Tells this process's leases apart from those of processes that died on this host.
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        # _lock guards every attribute below. Waiting workers wait on _job_ready, join() on
        # _all_taken_done; both are notified under _lock.
        self._job_ready = threading.Condition(self._lock)
        self._all_taken_done = threading.Condition(self._lock)
        self._queued = 0  # queued rows, as last counted plus what this process did since
        self._counted_at = float("-inf")  # monotonic time of the last count
        self._reserved = 0  # room claimed by reserve() and not yet used by put()
        self._taken = 0  # notifications handed out by get() and not yet task_done()
        self._tickets = 0  # jobs put() by this process and not yet claimed by a worker
        self._waiting = 0  # workers waiting in get()
        self._retries: list[float] = []  # heap of the due times of this process's retries
        self._next_reap = float("-inf")  # monotonic time of the next look for expired leases
        self._closed = False

    # Room --------------------------------------------------------------------------------------

    def reserve(self) -> None:
        with self._lock:
            now = time.monotonic()
            stale = now > self._counted_at + RECOUNT_SECONDS
            if stale or self._queued + self._reserved >= self._max_size:
                # The local count is too high after a queued job was canceled, and too low
                # after another process queued jobs. It is read again before a refusal and
                # every second, so a process never overshoots max_size on its own.
                self._queued = self._count_queued()
                self._counted_at = now
            if self._queued + self._reserved >= self._max_size:
                raise QueueFull(f"the queue is full ({self._max_size} jobs waiting)")
            self._reserved += 1

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def put(self, notification: Notification) -> None:
        with self._lock:
            self._reserved -= 1
            self._queued += 1
            self._tickets += 1
            self._job_ready.notify()

    def put_later(self, notification: Notification, at: float) -> None:
        # The finish already wrote the retry time (`next_attempt_at`). Writing it again covers
        # a caller that retries a job without finishing it.
        self._db.write(partial(_delay, job_id=notification.job_id, at=at), durable=False)
        with self._lock:
            self._queued += 1
            heapq.heappush(self._retries, at)
            self._job_ready.notify()

    def depth(self) -> int:
        return self._count_queued()

    def _count_queued(self) -> int:
        rows = self._db.read(
            f"SELECT count(*) FROM jobs WHERE {UNFINISHED_CONDITION} AND status = 'queued'"
        )
        return int(rows[0][0])

    # Taking jobs -------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Notification | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        look: bool | None = None  # whether to read the table for ready jobs; None on entry
        while True:
            with self._lock:
                if self._closed:
                    return None
                # A put() of this process leaves a ticket: the job is committed and ready, so
                # one worker claims it without looking, and no other worker chases it.
                claim = self._tickets > 0
                if claim:
                    self._tickets -= 1
                elif look is None:
                    # Entering while other workers wait: they look often enough, and they get
                    # the next put's ticket, so this one waits in line without a read.
                    look = not self._waiting
            failed = False
            try:
                if look and not claim:
                    self._reap_expired_leases()
                    claim = bool(self._db.read(_ANY_READY, {"now": self._clock.now()}))
                notification = self._take() if claim else None
            except BackendUnavailable:
                # A worker thread must outlive a database that is briefly unreachable.
                logger.exception("Taking a job from the queue failed; trying again shortly.")
                notification, failed = None, True
            if notification is not None:
                return notification
            with self._lock:
                if self._closed:
                    return None
                if self._tickets and not failed:
                    continue
                wait = POLL_SECONDS if failed else self._seconds_until_next_retry()
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = min(wait, remaining)
                self._waiting += 1
                notified = self._job_ready.wait(wait)
                self._waiting -= 1
            # Jobs queued by other processes, and retries coming due, have no ticket: a wait
            # that ran out means it is time to look at the table.
            look = not notified
            if look:
                self._sync_while_quiet()

    def _sync_while_quiet(self) -> None:
        # Workers' own writes wait for no fsync (see SqliteStatusStore). When a worker found no
        # job for a while, it syncs them, so a quiet service does not keep them unsynced.
        try:
            self._db.sync_committed()
        except BackendUnavailable:
            logger.exception("Syncing finished jobs to disk failed; the next sync retries it.")

    def _seconds_until_next_retry(self) -> float:
        # Caller holds _lock.
        now = self._clock.now()
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
        if not self._retries:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, self._retries[0] - now))

    def _take(self) -> Notification | None:
        while True:
            now = self._clock.now()
            lease = {"owner": self._owner, "expires": now + self._lease_seconds, "now": now}
            taken = self._db.write(partial(_lease_and_start, lease=lease), durable=False)
            if taken is None:
                return None
            job, started, payload = taken
            self._db.records.put(job)
            self._db.records.remember_start(job.id, started)
            self._db.wake((job.id,))
            with self._lock:
                self._queued = max(0, self._queued - 1)
                self._taken += 1
            try:
                return self._decode(job.type, json.loads(payload))
            except (BackburnerError, TypeError, ValueError) as error:
                self._fail_undecodable(job.id, job.type, error)

    def _fail_undecodable(self, job_id: str, job_type: str, error: Exception) -> None:
        logger.error(
            "Job %s (%s) cannot run here: its notification could not be rebuilt: %s",
            job_id,
            job_type,
            error,
        )
        failure = ErrorInfo(
            ErrorType.INVALID_INPUT,
            f"its notification could not be rebuilt from the database ({error}); is job type "
            f"{job_type!r} registered through handlers.modules in every process?",
        )
        change = partial(transitions.fail, now=self._clock.now(), error=failure)
        try:
            self._db.write(partial(apply_change, job_id=job_id, change=change), durable=True)
        finally:
            self._db.records.forget((job_id,))
            self._db.records.take_start(job_id)
            self._db.wake((job_id,))
            self._finish_taken()

    def task_done(self, notification: Notification) -> None:
        # Nothing to write: the change that ended the job's running status ended its lease. A
        # job still running here (its worker gave up on it) keeps the lease until it runs out.
        self._db.records.take_start(notification.job_id)  # left over if the job never started
        self._finish_taken()

    def _finish_taken(self) -> None:
        with self._lock:
            self._taken -= 1
            if self._taken == 0:
                self._all_taken_done.notify_all()

    def renew(self, job_ids: Sequence[str]) -> None:
        expires = self._clock.now() + self._lease_seconds
        renewals = [(expires, job_id, self._owner) for job_id in job_ids]

        def extend(connection: sqlite3.Connection) -> int:
            return connection.executemany(_RENEW, renewals).rowcount

        renewed = self._db.write(extend, durable=False)
        if renewed < len(renewals):
            # Another process took the job back because this one stalled past its lease, or the
            # job ended meanwhile. Either way the lease is no longer ours to extend.
            logger.warning(
                "Renewed %d of the leases of jobs %s; the others are no longer held here.",
                renewed,
                ", ".join(job_ids),
            )

    # Expired leases ----------------------------------------------------------------------------

    def _reap_expired_leases(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_reap:
                return
            self._next_reap = now + REAP_SECONDS
        try:
            self.reap_expired_leases()
        except BackendUnavailable:
            logger.exception("Looking for jobs with expired leases failed; trying again later.")

    def reap_expired_leases(self) -> list[Job]:
        """Give running jobs whose lease ran out back to the queue, or fail them for good.

        Returns the jobs it changed. `get` runs this at most every `REAP_SECONDS`.
        """
        now = self._clock.now()
        if not self._db.read(_EXPIRED, (now,)):
            return []
        requeue = partial(_requeue_expired, now=now, policy=self._policy)
        reaped = self._db.write(requeue, durable=True)
        for job in reaped:
            if job.status is JobStatus.QUEUED:
                logger.warning(
                    "Job %s lost its lease during attempt %d (%s); it is queued again.",
                    job.id,
                    job.attempt,
                    LOST_LEASE.message,
                )
            else:
                message = job.error.message if job.error is not None else "no error recorded"
                logger.error("Job %s failed for good after losing its lease: %s", job.id, message)
        with self._lock:
            requeued = sum(1 for job in reaped if job.status is JobStatus.QUEUED)
            self._queued += requeued
            self._tickets += requeued
            self._job_ready.notify(requeued)
        self._db.records.forget(job.id for job in reaped)
        self._db.wake(job.id for job in reaped)
        return reaped

    # Waiting and stopping ----------------------------------------------------------------------

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                idle = self._taken == 0
            if idle and not self._db.read(
                f"SELECT 1 FROM jobs WHERE {UNFINISHED_CONDITION} LIMIT 1"
            ):
                return True
            with self._lock:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # The last task_done() wakes this at once; jobs of other processes are seen by
                # polling.
                self._all_taken_done.wait(min(remaining, POLL_SECONDS))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._job_ready.notify_all()
            self._all_taken_done.notify_all()

    def drain(self) -> list[Notification]:
        return []  # a durable queue keeps its jobs for the next start


def _lease_and_start(
    connection: sqlite3.Connection, lease: dict[str, Any]
) -> tuple[Job, transitions.StartedAttempt, str] | None:
    """Lease the oldest ready job and start its next attempt; None when none is ready."""
    rows = connection.execute(_NEXT_READY, lease).fetchall()
    if not rows:
        return None
    payload, record = rows[0]
    job = decode_job(record)
    started = transitions.start(job, lease["now"])
    if started is None:  # only queued rows are selected, so this is a bug
        raise RuntimeError(f"job {job.id} was selected as queued but is {job.status}")
    job.version += 1
    connection.execute(_LEASE_AND_START, {**write_params(job), **lease})
    return job, started, payload


def _delay(connection: sqlite3.Connection, job_id: str, at: float) -> None:
    connection.execute(
        "UPDATE jobs SET due_at = max(due_at, ?) WHERE id = ? AND status = 'queued'", (at, job_id)
    )


def _requeue_expired(connection: sqlite3.Connection, now: float, policy: RetryPolicy) -> list[Job]:
    rows = connection.execute(_EXPIRED, (now,)).fetchall()
    change = partial(transitions.requeue, now=now, reason=LOST_LEASE, policy=policy)
    reaped: list[Job] = []
    for (job_id,) in rows:
        # The change leaves the running status, and with it the dead process's lease.
        result, job = apply_change(connection, job_id, change)
        if result is not None:
            reaped.append(job)
    return reaped
