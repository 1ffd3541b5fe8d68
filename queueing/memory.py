"""The memory backend: a queue and a status store inside one process; nothing survives it."""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from queueing.clock import Clock
from queueing.errors import IdempotencyKeyInFlight, JobNotFound, QueueFull
from queueing.job_queue import JobQueue
from queueing.jobs import Job, JobQuery, Notification
from queueing.status_store import StatusStore

T = TypeVar("T")


class MemoryQueue(JobQueue):
    """A deque of notifications with a room limit and a timer for retries.

    `reserve` enforces `max_size` for new jobs only, so retries of accepted jobs can always be
    put. One lock guards everything, and every section under it is a few deque and counter
    operations. Under the GIL a thread that blocks on a lock gives the GIL away and waits for
    it again, so each extra lock or longer section on the way of every job costs thread
    switches when the workers are busy.
    """

    name = "memory"
    durable = False

    def __init__(self, max_size: int, clock: Clock) -> None:
        self._max_size = max_size
        self._clock = clock
        self._lock = threading.Lock()
        # _lock guards _ready, _reserved, _unfinished, _delayed, _closed and _timer; the three
        # conditions below share it.
        self._ready: deque[Notification] = deque()
        self._reserved = 0  # room claimed by reserve() and not yet used by put()
        self._unfinished = 0  # notifications put (now or later) and not yet task_done()
        self._delayed: list[tuple[float, int, Notification]] = []  # heap by due time
        self._sequence = itertools.count()  # breaks ties between equal due times
        self._closed = False
        self._timer: threading.Thread | None = None
        self._available = threading.Condition(self._lock)  # a notification is ready, or closed
        self._timer_wakeup = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)

    def reserve(self) -> None:
        with self._lock:
            if len(self._ready) + self._reserved >= self._max_size:
                raise QueueFull(f"the queue is full ({self._max_size} jobs waiting)")
            self._reserved += 1

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def put(self, notification: Notification) -> None:
        with self._lock:
            self._reserved -= 1
            self._unfinished += 1
            self._ready.append(notification)
            self._available.notify()

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
                self._ready.append(notification)
                self._available.notify()
            return self._delayed[0][0] - now if self._delayed else None

    def _run_timer(self) -> None:
        while True:
            wait = self.promote_due()
            with self._lock:
                if self._closed:
                    return
                self._timer_wakeup.wait(wait)

    def get(self, timeout: float | None = None) -> Notification | None:
        # Waits use the real monotonic clock, not the injected one: a test's manual clock does
        # not move while a thread waits.
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._ready and not self._closed:
                if deadline is None:
                    self._available.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._available.wait(remaining)
            if self._closed:
                # What is still queued stays there for drain().
                return None
            return self._ready.popleft()

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
            return len(self._ready) + len(self._delayed)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._available.notify_all()
            self._timer_wakeup.notify()

    def drain(self) -> list[Notification]:
        with self._lock:
            drained = list(self._ready)
            self._ready.clear()
            drained.extend(notification for _, _, notification in sorted(self._delayed))
            self._delayed.clear()
            self._unfinished -= len(drained)
            self._all_done.notify_all()
        return drained


class MemoryStatusStore(StatusStore):
    """Job records in a dict, with one lock around every read and write of the dict.

    A record in the dict is never changed once stored: `update` puts a changed copy in its
    place. So a reader takes the record under the lock and copies it after releasing it, and
    the lock is held for dict operations only, except while an update copies and changes one
    record. Under the GIL a thread that finds a lock taken gives up the GIL and must queue for
    it again, so every extra or longer hold of this lock costs thread switches on a busy pool.
    """

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # _lock guards _jobs, _order, _keys and _waiters. The records themselves are never
        # changed after they are stored, so copying one needs no lock.
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # every id in _jobs, sorted (UUIDv7 sorts by creation time)
        self._keys: dict[tuple[str | None, str], str | None] = {}  # -> job id, None while claimed
        self._waiters: dict[str, list[threading.Event]] = {}

    def create(self, job: Job, payload: Mapping[str, Any] | None = None) -> None:
        # Stored records are never changed (an update stores a changed copy), so the caller's
        # record can be kept as it is, and the caller may go on reading it.
        record = job
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
        # The copy and the change run under the lock. Running them outside it and swapping the
        # result in, with a retry when another update came first, took the lock twice per
        # update, and on a busy pool the extra thread switches cost more than the change.
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                raise JobNotFound(job_id)
            draft = current.copy()
            result = change(draft)
            if result is None:
                return None
            draft.version = current.version + 1
            self._jobs[job_id] = draft
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
                found.append(job)
                if len(found) >= query.limit:
                    break
        return [job.copy() for job in found]

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job:
        event = threading.Event()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            changed = job.version > version
            if not changed:
                self._waiters.setdefault(job_id, []).append(event)
        if changed:
            return job.copy()
        event.wait(timeout)
        with self._lock:
            waiting = self._waiters.get(job_id)
            if waiting is not None and event in waiting:
                waiting.remove(event)
                if not waiting:
                    del self._waiters[job_id]
            latest = self._jobs.get(job_id)
        if latest is None:
            raise JobNotFound(job_id)
        return latest.copy()

    def purge(self, created_before: float) -> list[str]:
        purged: list[str] = []
        with self._lock:
            # Ids are in creation order, so the scan stops at the first young job. Old jobs that
            # are still queued or running are kept.
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
                # A dict keeps the table of its largest size after deletions. Copying it
                # frees that memory once a burst of jobs has been purged.
                if len(purged) > len(self._jobs):
                    self._jobs = dict(self._jobs)
        return purged

    def claim_idempotency_key(self, owner: str | None, key: str) -> Job | None:
        with self._lock:
            if (owner, key) in self._keys:
                job_id = self._keys[(owner, key)]
                if job_id is None:
                    raise IdempotencyKeyInFlight(
                        f"a request with Idempotency-Key {key!r} is still being accepted"
                    )
                earlier = self._jobs.get(job_id)
                if earlier is not None:
                    return earlier.copy()
            self._keys[(owner, key)] = None
            return None

    def release_idempotency_key(self, owner: str | None, key: str) -> None:
        with self._lock:
            if (owner, key) in self._keys and self._keys[(owner, key)] is None:
                del self._keys[(owner, key)]
