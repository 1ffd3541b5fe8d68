"""The application container: built once per process from the settings and passed down."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dependency_injector import containers, providers

from containers.scope import ScopeFactory
from handlers.registry import BUILTIN_MODULES, Registry, load_registry
from queueing.clock import SystemClock
from queueing.errors import SettingsError
from queueing.estimates import DurationStats
from queueing.local_files import LocalFileStore
from queueing.memory import MemoryQueue, MemoryStatusStore
from queueing.service import JobService, ServiceSettings
from queueing.sqlite import SqliteDatabase
from queueing.sqlite_queue import SqliteQueue
from queueing.sqlite_store import SqliteStatusStore
from queueing.transitions import RetryPolicy
from queueing.workers import PoolSettings, WorkerPool


def build_registry(extra_modules: Sequence[str], delay_enabled: bool) -> Registry:
    builtin = [m for m in BUILTIN_MODULES if delay_enabled or m != "handlers.delay"]
    return load_registry([*builtin, *extra_modules])


def pool_settings(settings: Mapping[str, Any]) -> PoolSettings:
    jobs = settings["jobs"]
    return PoolSettings(
        threads=settings["workers"]["threads"],
        timeout_seconds=jobs["timeout_seconds"],
        timeouts=dict(jobs["timeouts"]),
        retry=RetryPolicy(jobs["max_attempts"], jobs["retry_backoff_seconds"]),
        handler_settings=MappingProxyType(dict(settings)),
        lease_seconds=jobs["lease_seconds"],
    )


def service_settings(settings: Mapping[str, Any]) -> ServiceSettings:
    return ServiceSettings(
        retention_seconds=settings["jobs"]["retention_seconds"],
        long_poll_max_seconds=settings["server"]["long_poll_max_seconds"],
        max_waiting_requests=settings["server"]["max_waiting_requests"],
        workers=max(1, settings["workers"]["threads"]),
    )


def files_must_survive_power_loss(settings: Mapping[str, Any]) -> bool:
    """Return whether saved files are flushed to disk, as `sqlite_synchronous: full` requires."""
    queue = settings["queue"]
    return bool(queue["backend"] == "sqlite" and queue["sqlite_synchronous"] == "full")


def job_resources(registry: Registry, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Build one `ContextLocalResource` per registered per-job resource, given the settings."""
    frozen = MappingProxyType(dict(settings))
    return {
        name: providers.ContextLocalResource(factory, frozen)
        for name, factory in registry.resources.items()
    }


class ApplicationContainer(containers.DeclarativeContainer):
    """Everything long-lived in one process; per-job things live in each job's scope."""

    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)
    durations = providers.Singleton(DurationStats)
    registry = providers.Singleton(
        build_registry, config.handlers.modules, config.jobs.delay_enabled
    )

    # The SQLite queue and status store share one database: the queue is the jobs table.
    sqlite_database = providers.Singleton(
        SqliteDatabase, config.queue.sqlite_path, config.queue.sqlite_synchronous
    )
    job_queue = providers.Selector(
        config.queue.backend,
        memory=providers.Singleton(MemoryQueue, max_size=config.queue.max_size, clock=clock),
        sqlite=providers.Singleton(
            SqliteQueue,
            sqlite_database,
            max_size=config.queue.max_size,
            lease_seconds=config.jobs.lease_seconds,
            policy=providers.Factory(
                RetryPolicy, config.jobs.max_attempts, config.jobs.retry_backoff_seconds
            ),
            decode=registry.provided.decode,
            clock=clock,
        ),
    )
    status_store = providers.Selector(
        config.queue.backend,
        memory=providers.Singleton(MemoryStatusStore),
        sqlite=providers.Singleton(SqliteStatusStore, sqlite_database, clock=clock),
    )
    file_store = providers.Selector(
        config.storage.backend,
        local=providers.Singleton(
            LocalFileStore,
            root=providers.Callable(Path, config.storage.data_dir),
            durable=providers.Callable(files_must_survive_power_loss, config),
        ),
    )

    scope_factory = providers.Singleton(
        ScopeFactory, providers.Callable(job_resources, registry, config)
    )
    worker_pool = providers.Singleton(
        WorkerPool,
        queue=job_queue,
        store=status_store,
        files=file_store,
        handlers=registry,
        scope_factory=scope_factory,
        settings=providers.Callable(pool_settings, config),
        clock=clock,
        durations=durations,
    )
    job_service = providers.Singleton(
        JobService,
        store=status_store,
        queue=job_queue,
        files=file_store,
        clock=clock,
        durations=durations,
        settings=providers.Callable(service_settings, config),
        cancel_running=worker_pool.provided.request_cancel,
    )


def build_container(settings: Mapping[str, Any]) -> ApplicationContainer:
    """Build the container from checked settings (see `containers.settings.load_settings`).

    Also checks what the settings alone cannot show: that the folders they name can be
    written, and that `jobs.timeouts` names job types that exist. Raises SettingsError.
    """
    container = ApplicationContainer()
    container.config.from_dict(dict(settings))
    if settings["storage"]["backend"] == "local":
        prepare_folder("storage.data_dir", Path(settings["storage"]["data_dir"]))
    prepare_folder("csv.summary_db", Path(settings["csv"]["summary_db"]).parent)
    if settings["queue"]["backend"] == "sqlite":
        prepare_folder("queue.sqlite_path", Path(settings["queue"]["sqlite_path"]).parent)
    known = container.registry().names()
    for job_type in settings["jobs"]["timeouts"]:
        if job_type not in known:
            raise SettingsError(
                "jobs.timeouts", f"no job type named {job_type!r}; known: {', '.join(known)}"
            )
    return container


def prepare_folder(setting: str, folder: Path) -> None:
    """Create `folder` if missing and check that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SettingsError(
            setting, f"cannot create or write files in {folder}: {error.strerror or error}"
        ) from None
