"""The worker pool: daemon threads that take jobs from the queue and run their handlers."""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from queueing import transitions
from queueing.clock import Clock
from queueing.context import CancelToken, JobContext, Scope
from queueing.documents import rfc3339
from queueing.errors import BackburnerError, BackendUnavailable, JobNotFound, ScopeCloseError
from queueing.estimates import DurationStats
from queueing.files import FileStore
from queueing.job_queue import JobQueue
from queueing.jobs import ErrorInfo, ErrorType, HandlerOutcome, JobStatus, Notification, Progress
from queueing.publisher import HandlerLike, publish
from queueing.status_store import StatusStore

logger = logging.getLogger(__name__)


class HandlerSource(Protocol):
    """The part of the registry the pool uses: a notification's job type and handlers."""

    def for_notification(self, notification: type[Notification]) -> Any: ...

    def handlers_for(self, notification: type[Notification]) -> Sequence[HandlerLike]: ...


ScopeFactory = Callable[[str], Scope]


@dataclass(frozen=True)
class PoolSettings:
    threads: int = 4
    timeout_seconds: float = 300.0
    timeouts: Mapping[str, float] = field(default_factory=dict)  # per job type
    retry: transitions.RetryPolicy = field(default_factory=transitions.RetryPolicy)
    handler_settings: Mapping[str, Any] = field(default_factory=dict)  # JobContext.settings
    lease_seconds: float = 30.0  # durable queues: renewed every third of this while running
    cancel_poll_seconds: float = 0.5  # shared queues: how often cancel flags are read back

    def timeout_for(self, job_type: str) -> float:
        return self.timeouts.get(job_type, self.timeout_seconds)


@dataclass(frozen=True)
class WorkerCounts:
    alive: int  # worker threads taking jobs
    busy: int  # jobs running now
    abandoned: int  # threads left running a timed-out handler that ignored its cancel token


@dataclass(frozen=True)
class ShutdownReport:
    finished: int  # jobs that ended on their own during the grace period
    interrupted: list[str]  # jobs still running when the grace period ran out
    drained: list[str]  # jobs still queued


@dataclass(eq=False)
class _Worker:
    name: str
    thread: threading.Thread | None = None
    retired: bool = False  # takes no further job: abandoned after a timeout, or stopping


@dataclass(eq=False)
class _Running:
    job_id: str
    job_type: str
    token: CancelToken
    deadline: float  # monotonic
    timeout: float
    worker: _Worker
    timed_out: bool = False


class WorkerPool:
    """Runs jobs on `settings.threads` daemon threads, with timeouts, retries and cancel.

    A supervisor thread ends jobs that pass their timeout. A handler that ignores its cancel
    token keeps its thread, so the pool abandons that thread and starts a replacement.
    """

    def __init__(
        self,
        *,
        queue: JobQueue,
        store: StatusStore,
        files: FileStore,
        handlers: HandlerSource,
        scope_factory: ScopeFactory,
        settings: PoolSettings,
        clock: Clock,
        durations: DurationStats | None = None,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
        rng: random.Random | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._files = files
        self._handlers = handlers
        self._scope_factory = scope_factory
        self._settings = settings
        self._clock = clock
        self._durations = durations or DurationStats()
        self._thread_factory = thread_factory
        self._rng = rng or random.Random()
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        # _lock guards _workers, _abandoned, _running, _stopping, _next_check and the
        # _running records' timed_out flags. Store calls happen outside it.
        self._workers: list[_Worker] = []
        self._abandoned: set[_Worker] = set()
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._started = False
        self._next_check = float("inf")
        self._shortest_timeout = min([settings.timeout_seconds, *settings.timeouts.values()])
        self._next_renewal = 0.0  # monotonic time of the next lease renewal
        self._next_cancel_poll = 0.0  # monotonic time of the next read of cancel flags
        self._supervisor_wakeup = threading.Condition(self._lock)
        self._supervisor: threading.Thread | None = None
        self._errors: deque[BaseException] = deque(maxlen=100)

    # Life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for _ in range(self._settings.threads):
                self._spawn()
            self._supervisor = self._thread_factory(
                target=self._supervise, name="backburner-supervisor", daemon=True
            )
        self._supervisor.start()
        logger.info("Worker pool started with %d threads.", self._settings.threads)

    def _spawn(self) -> None:
        # Caller holds _lock.
        worker = _Worker(f"backburner-worker-{next(self._names)}")
        worker.thread = self._thread_factory(
            target=self._work, args=(worker,), name=worker.name, daemon=True
        )
        self._workers.append(worker)
        worker.thread.start()

    def stop(self, grace: float) -> ShutdownReport:
        """Stop taking jobs, give running ones `grace` seconds, then stop the rest.

        The order matters. The queue closes first, so no worker starts another job while the
        running ones finish. Only then are the stragglers interrupted and the queue drained.
        Durable queues take interrupted jobs back for the next start. The memory queue keeps
        nothing, so its interrupted and queued jobs end `failed` with error type `shutdown`.
        """
        with self._lock:
            self._stopping = True
            running_at_start = len(self._running)
            workers = list(self._workers)
            for worker in workers:
                worker.retired = True
        self._queue.close()
        deadline = self._clock.monotonic() + grace
        for worker in workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - self._clock.monotonic()))
        with self._lock:
            stragglers = list(self._running.values())
            self._supervisor_wakeup.notify()
        now = self._clock.now()
        for running in stragglers:
            # Record the end first: a handler that sees its token could otherwise record its
            # own end (canceled) before the shutdown puts the job back in the queue.
            self._end_interrupted(running.job_id, now)
            running.token.set("shutdown")
        drained = self._queue.drain()
        for notification in drained:
            self._safe_update(notification.job_id, partial(transitions.fail_for_shutdown, now=now))
        report = ShutdownReport(
            finished=running_at_start - len(stragglers),
            interrupted=[r.job_id for r in stragglers],
            drained=[n.job_id for n in drained],
        )
        if stragglers or drained:
            outcome = "returned to the queue" if self._queue.durable else "failed"
            logger.warning(
                "Shutdown: %d running and %d queued jobs %s.",
                len(stragglers),
                len(drained),
                outcome,
            )
        logger.info(
            "Worker pool stopped; %d jobs finished during the grace period.", report.finished
        )
        return report

    def _end_interrupted(self, job_id: str, now: float) -> None:
        if self._queue.durable:
            reason = ErrorInfo(ErrorType.SHUTDOWN, "the service shut down during the attempt")
            change = partial(
                transitions.requeue,
                now=now,
                reason=reason,
                policy=self._settings.retry,
                limited=False,
            )
            self._safe_update(job_id, change)
        else:
            self._safe_update(job_id, partial(transitions.fail_for_shutdown, now=now))

    def join(self, timeout: float, *, raise_errors: bool = False) -> bool:
        """Wait until the queue is empty and every job put so far was handled.

        With `raise_errors`, re-raise the first exception a handler raised since the last join,
        so a failing job fails a test with its own traceback.
        """
        finished = self._queue.join(timeout)
        if raise_errors and self._errors:
            error = self._errors.popleft()
            self._errors.clear()
            raise error
        return finished

    def run_once(self, timeout: float = 0.0) -> bool:
        """Take one job and run it on the calling thread; return False if none came in time."""
        notification = self._queue.get(timeout)
        if notification is None:
            return False
        try:
            self._process(notification, _Worker("inline"))
        finally:
            self._queue.task_done(notification)
        return True

    def counts(self) -> WorkerCounts:
        with self._lock:
            alive = sum(1 for w in self._workers if w.thread is not None and w.thread.is_alive())
            abandoned = sum(
                1 for w in self._abandoned if w.thread is not None and w.thread.is_alive()
            )
            return WorkerCounts(alive=alive, busy=len(self._running), abandoned=abandoned)

    def request_cancel(self, job_id: str) -> bool:
        """Set the cancel token of a job running in this process; return whether it runs here."""
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            return False
        running.token.set("canceled")
        return True

    # Worker threads ----------------------------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        logger.debug("Worker %s started.", worker.name)
        try:
            while not worker.retired:
                notification = self._queue.get()
                if notification is None:
                    break
                try:
                    self._process(notification, worker)
                finally:
                    if worker.retired:
                        # Leave the counts before task_done(), so join() sees them current.
                        self._leave(worker)
                    self._queue.task_done(notification)
        finally:
            self._leave(worker)
            logger.debug("Worker %s stopped.", worker.name)

    def _leave(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            self._abandoned.discard(worker)

    def _process(self, notification: Notification, worker: _Worker) -> None:
        job_id = notification.job_id
        try:
            self._run_job(notification, worker)
        # The worker must survive every job: anything the engine itself raises (a store that
        # failed, say) is logged and recorded on the job, and the thread takes the next one.
        except Exception as error:
            logger.exception("Worker %s failed while running job %s.", worker.name, job_id)
            self._errors.append(error)
            message = f"the worker failed: {type(error).__name__}: {error}"
            outcome = HandlerOutcome(
                "worker", JobStatus.FAILED, message, error_type=ErrorType.HANDLER_ERROR
            )
            if self._finish(notification, [outcome], []) is None:
                # Not running: it failed before it could start, so nothing will retry it.
                failure = ErrorInfo(ErrorType.HANDLER_ERROR, message)
                self._safe_update(
                    job_id, partial(transitions.fail, now=self._clock.now(), error=failure)
                )

    def _run_job(self, notification: Notification, worker: _Worker) -> None:
        job_id = notification.job_id
        kind = type(notification)
        job_type: str = self._handlers.for_notification(kind).name
        handlers = self._handlers.handlers_for(kind)
        try:
            started = self._store.update(job_id, partial(transitions.start, now=self._clock.now()))
        except JobNotFound:
            logger.info("Job %s was deleted before a worker took it.", job_id)
            return
        if started is None:
            logger.debug("Job %s is no longer queued; skipped.", job_id)
            return

        timeout = self._settings.timeout_for(job_type)
        began = self._clock.monotonic()
        running = _Running(job_id, job_type, CancelToken(), began + timeout, timeout, worker)
        with self._lock:
            self._running[job_id] = running
            if running.deadline < self._next_check:
                self._supervisor_wakeup.notify()
        logger.debug("Job %s (%s) started attempt %d.", job_id, job_type, started.number)
        try:
            outcomes, files = self._run_handlers(notification, handlers, running, started)
            status = self._finish(notification, outcomes, files)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
        if status is JobStatus.SUCCEEDED:
            self._durations.record(job_type, self._clock.monotonic() - began)
        if status is not None:
            logger.info(
                "Job %s (%s) attempt %d ended %s.", job_id, job_type, started.number, status
            )

    def _run_handlers(
        self,
        notification: Notification,
        handlers: Sequence[HandlerLike],
        running: _Running,
        started: transitions.StartedAttempt,
    ) -> tuple[list[HandlerOutcome], list[str]]:
        job_id = notification.job_id
        scope = self._scope_factory(job_id)
        context = JobContext(
            job_id=job_id,
            job_type=running.job_type,
            attempt=started.number,
            settings=self._settings.handler_settings,
            files=self._files,
            cancel_token=running.token,
            scope=scope,
            report=partial(self._report_progress, job_id),
        )
        try:
            outcomes = scope.run(
                partial(
                    publish,
                    notification,
                    handlers,
                    context,
                    started.earlier,
                    on_error=self._errors.append,
                )
            )
        finally:
            # The scope closes here, on the job's own thread, whatever happened above.
            close_error = self._close_scope(scope, job_id)
        if close_error is not None:
            outcomes.append(
                HandlerOutcome(
                    "scope", JobStatus.FAILED, str(close_error), error_type=ErrorType.HANDLER_ERROR
                )
            )
        return outcomes, context.outputs

    def _close_scope(self, scope: Scope, job_id: str) -> ScopeCloseError | None:
        try:
            scope.close()
        except ScopeCloseError as error:
            logger.error("Job %s: %s", job_id, error)
            return error
        return None

    def _report_progress(
        self, job_id: str, done: float, total: float | None, message: str | None
    ) -> None:
        progress = Progress(done, total, message)
        self._safe_update(
            job_id, partial(transitions.record_progress, progress=progress, now=self._clock.now())
        )

    def _finish(
        self, notification: Notification, outcomes: list[HandlerOutcome], files: list[str]
    ) -> JobStatus | None:
        job_id = notification.job_id
        now = self._clock.now()
        change = partial(
            transitions.finish,
            outcomes=outcomes,
            files=files,
            now=now,
            policy=self._settings.retry,
            rng=self._rng,
        )
        status = self._safe_update(job_id, change)
        if status is JobStatus.QUEUED:
            job = self._store.get(job_id)
            retry_at = job.next_attempt_at if job.next_attempt_at is not None else now
            self._queue.put_later(notification, retry_at)
            logger.warning(
                "Job %s attempt %d failed; retry at %s.", job_id, job.attempt, rfc3339(retry_at)
            )
        return status

    def _safe_update(self, job_id: str, change: Callable[[Any], Any]) -> Any:
        try:
            return self._store.update(job_id, change)
        except JobNotFound:
            logger.info("Job %s was deleted while it ran; its outcome is dropped.", job_id)
            return None
        except BackendUnavailable as error:
            if self._stopping:
                # A handler that ignored the shutdown finished after the store closed.
                logger.warning(
                    "Job %s ended after shutdown; its outcome was not recorded: %s", job_id, error
                )
            else:
                logger.exception("Could not record a change of job %s.", job_id)
            return None
        except BackburnerError:
            logger.exception("Could not record a change of job %s.", job_id)
            return None

    # Supervisor --------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            # Count the wait from before the checks: a job started since then, whose deadline
            # is later than the earliest one found, then does not wake the supervisor. Counting
            # from after them woke it for every job that started during the checks, which
            # kept it waking on a busy pool and cost the workers a GIL hand-over each time.
            checked_at = self._clock.monotonic()
            wait = min(self.check_deadlines(), self.maintain_leases())
            with self._lock:
                if self._stopping and not self._running:
                    return
                self._next_check = checked_at + wait
                self._supervisor_wakeup.wait(max(0.0, self._next_check - self._clock.monotonic()))
                self._next_check = float("inf")

    def check_deadlines(self) -> float:
        """End the jobs past their timeout; return the seconds until the next deadline.

        One step of the supervisor loop, public so tests can drive it with a manual clock.
        """
        now = self._clock.monotonic()
        expired: list[_Running] = []
        next_deadline = float("inf")
        with self._lock:
            for running in self._running.values():
                if running.timed_out:
                    continue
                if running.deadline <= now:
                    running.timed_out = True
                    expired.append(running)
                else:
                    next_deadline = min(next_deadline, running.deadline)
        for running in expired:
            self._time_out(running)
        # A job that starts later has a deadline at least the shortest timeout away, so waiting
        # no longer than that means starting a job never has to wake the supervisor.
        return min(next_deadline - now, self._shortest_timeout, 3600.0)

    def maintain_leases(self) -> float:
        """Renew the leases of running jobs and read back cancel requests made elsewhere.

        Durable queues only: their jobs are leased, and another process may have marked one of
        ours canceled. Returns the seconds until this is due again.
        """
        if not self._queue.durable:
            return float("inf")
        now = self._clock.monotonic()
        with self._lock:
            running = list(self._running)
        if now >= self._next_renewal:
            if running:
                try:
                    self._queue.renew(running)
                except BackburnerError:
                    logger.exception("Renewing the leases of %d jobs failed.", len(running))
            self._next_renewal = now + self._settings.lease_seconds / 3
        due = self._next_renewal
        if self._queue.shared:
            if now >= self._next_cancel_poll:
                for job_id in running:
                    self._read_cancel_request(job_id)
                self._next_cancel_poll = now + self._settings.cancel_poll_seconds
            due = min(due, self._next_cancel_poll)
        return max(0.0, due - now)

    def _read_cancel_request(self, job_id: str) -> None:
        try:
            job = self._store.get(job_id)
        except BackburnerError:
            return
        if job.cancel_requested:
            self.request_cancel(job_id)

    def _time_out(self, running: _Running) -> None:
        change = partial(transitions.time_out, now=self._clock.now(), limit=running.timeout)
        self._safe_update(running.job_id, change)
        running.token.set("timeout")
        with self._lock:
            worker = running.worker
            if worker.retired or worker.thread is None:
                return
            # The handler may ignore its token and hold the thread forever: retire the thread
            # (it exits when the handler returns) and start another in its place.
            worker.retired = True
            self._abandoned.add(worker)
            if worker in self._workers:
                self._workers.remove(worker)
            if not self._stopping:
                self._spawn()
        logger.warning(
            "Job %s passed its %g s timeout; its thread %s is abandoned and replaced.",
            running.job_id,
            running.timeout,
            worker.name,
        )
