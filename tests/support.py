"""Helpers shared by the engine tests: a manual clock and a pool on the memory backend."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from containers.scope import ScopeFactory
from handlers.registry import JSON, Registry
from queueing import transitions
from queueing.context import JobContext
from queueing.estimates import DurationStats
from queueing.files import FileStore
from queueing.jobs import Job, Notification
from queueing.memory import MemoryQueue, MemoryStatusStore
from queueing.service import JobService, ServiceSettings
from queueing.transitions import RetryPolicy
from queueing.workers import PoolSettings, WorkerPool

NOW = 1_800_000_000.0
HANG_GUARD = 30.0


def shared_data_path() -> Path:
    """Return the sample input folder: `$BACKBURNER_SHARED_DATA`, else `../shared/data`."""
    configured = os.environ.get("BACKBURNER_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


SHARED_DATA = shared_data_path()


class ManualClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, now: float = NOW) -> None:
        self.wall = now
        self.mono = 1000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@dataclass(frozen=True, kw_only=True)
class Work(Notification):
    """The notification of the test job type `work`; `tag` selects what handlers do."""

    tag: str = ""


Handler = Callable[[Work, JobContext], Mapping[str, Any] | None]


@dataclass
class Engine:
    """A worker pool, its memory queue and store, and a service, wired like the container."""

    registry: Registry
    queue: MemoryQueue
    store: MemoryStatusStore
    pool: WorkerPool
    service: JobService
    files: FileStore
    clock: Any
    submitted: list[str] = field(default_factory=list)

    def submit(self, tag: str = "") -> str:
        job_id = self.service.new_job_id()
        names = [h.name for h in self.registry.handlers_for(Work)]
        job = transitions.new_job(job_id, "work", names, self.clock.now())
        self.service.submit(job, Work(job_id=job_id, tag=tag))
        self.submitted.append(job_id)
        return job_id

    def job(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def wait_finished(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        while not job.status.is_final:
            job = self.store.wait_for_change(job_id, job.version, HANG_GUARD)
        return job


def build_engine(
    handlers: list[tuple[str, Handler]],
    files: FileStore,
    *,
    threads: int = 2,
    timeout: float = 300.0,
    max_attempts: int = 1,
    backoff: float = 0.0,
    resources: Mapping[str, Callable[[Mapping[str, Any]], Iterator[Any]]] | None = None,
    clock: Any = None,
) -> Engine:
    from dependency_injector import providers

    from queueing.clock import SystemClock

    clock = clock or SystemClock()
    registry = Registry()
    registry.job_type(
        "work", Work, lambda submission, intake: Work(job_id=intake.job_id), accepts=JSON
    )
    for name, run in handlers:
        registry.handler(Work, name, run)
    for name, factory in (resources or {}).items():
        registry.resource(name, factory)
    registry.freeze()
    queue = MemoryQueue(max_size=100, clock=clock)
    store = MemoryStatusStore()
    scope_factory = ScopeFactory(
        {name: providers.ContextLocalResource(f, {}) for name, f in registry.resources.items()}
    )
    durations = DurationStats()
    pool = WorkerPool(
        queue=queue,
        store=store,
        files=files,
        handlers=registry,
        scope_factory=scope_factory,
        settings=PoolSettings(
            threads=threads,
            timeout_seconds=timeout,
            retry=RetryPolicy(max_attempts=max_attempts, backoff_seconds=backoff),
        ),
        clock=clock,
        durations=durations,
        rng=random.Random(3),
    )
    service = JobService(
        store=store,
        queue=queue,
        files=files,
        clock=clock,
        durations=durations,
        settings=ServiceSettings(workers=threads),
        cancel_running=pool.request_cancel,
    )
    return Engine(registry, queue, store, pool, service, files, clock)


class Gate:
    """Lets a test hold a handler at a point and release it, with no sleeping."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        assert self.release.wait(HANG_GUARD), "the test never released the gate"
