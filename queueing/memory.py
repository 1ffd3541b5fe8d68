"""The memory backend: a queue and a status store inside one process; nothing survives it."""

from __future__ import annotations

import bisect
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from queueing.clock import Clock
from queueing.errors import IdempotencyKeyInFlight, JobNotFound, QueueFull
from queueing.job_queue import JobQueue
from queueing.jobs import Job, JobQuery, Notification
from queueing.status_store import StatusStore

T = TypeVar("T")

_CLOSED = object()  # put once by close(); each getter that takes it puts it back for the next


class MemoryQueue(JobQueue):
    """A `queue.Queue` of notifications with a room limit and a timer for retries.

    The underlying `queue.Queue` is unbounded on purpose: `reserve` enforces `max_size` for new
    jobs, so retries of accepted jobs and the close marker can always be put.
    """

    name = "memory"
    durable = False

    def __init__(self, max_size: int, clock: Clock) -> None:
        self._ready: queue.Queue[object] = queue.Queue()
        self._max_size = max_size
        self._clock = clock
        self._lock = threading.Lock()
        # _lock guards _reserved, _unfinished, _delayed, _closed and _timer. It is taken before
        # _ready's own mutex (put), never the other way round.
        self._reserved = 0  # room claimed by reserve() and not yet used by put()
        self._unfinished = 0  # notifications put (now or later) and not yet task_done()
        self._delayed: list[tuple[float, int, Notification]] = []  # heap by due time
        self._sequence = itertools.count()  # breaks ties between equal due times
        self._closed = False
        self._timer: threading.Thread | None = None
        self._timer_wakeup = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)

    def reserve(self) -> None:
        with self._lock:
            if self._ready.qsize() + self._reserved >= self._max_size:
                raise QueueFull(f"the queue is full ({self._max_size} jobs waiting)")
            self._reserved += 1

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def put(self, notification: Notification) -> None:
        with self._lock:
            self._reserved -= 1
            self._unfinished += 1
            self._ready.put(notification)

    def put_later(self, notification: Notification, at: float) -> None:
        with self._lock:
            self._unfinished += 1
            heapq.heappush(self._delayed, (at, next(self._sequence), notification))
            if self._timer is None and not self._closed:
                self._timer = threading.Thread(
                    target=self._run_timer, name="backburner-retry-timer", daemon=True
                )
                self._timer.start()
            self._timer_wakeup.notify()

    def promote_due(self) -> float | None:
        """Move retries that are due into the queue; return seconds until the next one is."""
        with self._lock:
            now = self._clock.now()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, notification = heapq.heappop(self._delayed)
                self._ready.put(notification)
            return self._delayed[0][0] - now if self._delayed else None

    def _run_timer(self) -> None:
        while True:
            wait = self.promote_due()
            with self._lock:
                if self._closed:
                    return
                self._timer_wakeup.wait(wait)

    def get(self, timeout: float | None = None) -> Notification | None:
        if self._closed:
            return None
        try:
            item = self._ready.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED or self._closed:
            # Put it back: the marker must wake the other getters too, and a notification taken
            # after close stays queued for drain().
            self._ready.put(item)
            return None
        assert isinstance(item, Notification)
        return item

    def task_done(self, notification: Notification) -> None:
        with self._lock:
            self._unfinished -= 1
            if self._unfinished <= 0:
                self._all_done.notify_all()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._unfinished > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._all_done.wait(remaining)
            return True

    def depth(self) -> int:
        with self._lock:
            marker = 1 if self._closed else 0
            return max(0, self._ready.qsize() - marker) + len(self._delayed)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready.put(_CLOSED)
            self._timer_wakeup.notify()

    def drain(self) -> list[Notification]:
        drained: list[Notification] = []
        with self._lock:
            while True:
                try:
                    item = self._ready.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Notification):
                    drained.append(item)
            drained.extend(notification for _, _, notification in sorted(self._delayed))
            self._delayed.clear()
            self._unfinished -= len(drained)
            if self._closed:
                self._ready.put(_CLOSED)
            self._all_done.notify_all()
        return drained


class MemoryStatusStore(StatusStore):
    """Job records in a dict, with one lock around every read and write."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # _lock guards _jobs (and every record in it), _order, _keys and _waiters. Change
        # functions run under it; copies and JSON encoding happen outside it.
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # every id in _jobs, sorted (UUIDv7 sorts by creation time)
        self._keys: dict[tuple[str | None, str], str | None] = {}  # -> job id, None while claimed
        self._waiters: dict[str, list[threading.Event]] = {}

    def create(self, job: Job, payload: Mapping[str, Any] | None = None) -> None:
        record = job.copy()
        with self._lock:
            self._jobs[record.id] = record
            if not self._order or record.id > self._order[-1]:
                self._order.append(record.id)
            else:
                bisect.insort(self._order, record.id)
            if record.idempotency_key is not None:
                self._keys[(record.owner, record.idempotency_key)] = record.id

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job.copy()

    def update(self, job_id: str, change: Callable[[Job], T | None]) -> T | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            result = change(job)
            if result is None:
                return None
            job.version += 1
            waiters = self._waiters.pop(job_id, None)
        if waiters:
            for event in waiters:
                event.set()
        return result

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            self._forget(job)
            waiters = self._waiters.pop(job_id, None)
        for event in waiters or ():
            event.set()

    def _forget(self, job: Job) -> None:
        # Caller holds _lock.
        del self._jobs[job.id]
        index = bisect.bisect_left(self._order, job.id)
        if index < len(self._order) and self._order[index] == job.id:
            del self._order[index]
        key = (job.owner, job.idempotency_key) if job.idempotency_key is not None else None
        if key is not None and self._keys.get(key) == job.id:
            del self._keys[key]

    def list_jobs(self, query: JobQuery) -> list[Job]:
        found: list[Job] = []
        with self._lock:
            end = len(self._order)
            if query.before is not None:
                end = bisect.bisect_left(self._order, query.before)
            # NOTE: a filter that few jobs match scans every older record under the lock.
            for index in range(end - 1, -1, -1):
                job = self._jobs[self._order[index]]
                if query.owner is not None and job.owner != query.owner:
                    continue
                if query.status is not None and job.status is not query.status:
                    continue
                if query.type is not None and job.type != query.type:
                    continue
                found.append(job.copy())
                if len(found) >= query.limit:
                    break
        return found

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job:
        event = threading.Event()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            if job.version > version:
                return job.copy()
            self._waiters.setdefault(job_id, []).append(event)
        event.wait(timeout)
        with self._lock:
            waiting = self._waiters.get(job_id)
            if waiting is not None and event in waiting:
                waiting.remove(event)
                if not waiting:
                    del self._waiters[job_id]
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job.copy()

    def purge(self, created_before: float) -> list[str]:
        purged: list[str] = []
        with self._lock:
            # Ids are in creation order, so the scan stops at the first young job; unfinished
            # old jobs are kept (they are still running or waiting) and skipped.
            for job_id in self._order:
                job = self._jobs[job_id]
                if job.created_at >= created_before:
                    break
                if job.status.is_final:
                    purged.append(job_id)
            for job_id in purged:
                job = self._jobs.pop(job_id)
                if job.idempotency_key is not None:
                    key = (job.owner, job.idempotency_key)
                    if self._keys.get(key) == job_id:
                        del self._keys[key]
            if purged:
                gone = set(purged)
                self._order = [job_id for job_id in self._order if job_id not in gone]
        return purged

    def claim_idempotency_key(self, owner: str | None, key: str) -> Job | None:
        with self._lock:
            if (owner, key) in self._keys:
                job_id = self._keys[(owner, key)]
                if job_id is None:
                    raise IdempotencyKeyInFlight(
                        f"a request with Idempotency-Key {key!r} is still being accepted"
                    )
                job = self._jobs.get(job_id)
                if job is not None:
                    return job.copy()
            self._keys[(owner, key)] = None
            return None

    def release_idempotency_key(self, owner: str | None, key: str) -> None:
        with self._lock:
            if (owner, key) in self._keys and self._keys[(owner, key)] is None:
                del self._keys[(owner, key)]
