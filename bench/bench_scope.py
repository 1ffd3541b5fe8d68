"""The cost of a job's dependency scope, with and without a per-job resource.

The reference is the approach the scope replaces: a new dependency-injector declarative
container for each job, whose resources are set up and shut down with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from dependency_injector import containers, providers

from bench.common import alternate, row
from containers.scope import ScopeFactory


class Connection:
    """Stands in for a per-job resource such as a database connection."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.closed = False

    def close(self) -> None:
        self.closed = True


def open_connection(settings: Mapping[str, Any]) -> Iterator[Connection]:
    connection = Connection(settings)
    try:
        yield connection
    finally:
        connection.close()


class Helper:
    """Stands in for a per-job object that needs no cleanup."""


class PerJobContainer(containers.DeclarativeContainer):
    """The rejected design: a whole container for every job."""

    helper = providers.Factory(Helper)


class PerJobContainerWithResource(containers.DeclarativeContainer):
    helper = providers.Factory(Helper)
    connection = providers.Resource(open_connection, {})


def scope_cost(jobs: int, *, with_resource: bool) -> float:
    """Return µs per job to make a scope, run a job in it and close it."""
    factory = ScopeFactory({"connection": providers.ContextLocalResource(open_connection, {})})

    def job_without() -> None:
        return None

    started = time.perf_counter()
    for number in range(jobs):
        scope = factory(str(number))
        scope.run(partial(scope.resource, "connection") if with_resource else job_without)
        scope.close()
    return (time.perf_counter() - started) / jobs * 1e6


def container_cost(jobs: int, *, with_resource: bool) -> float:
    """Return µs per job to make a container, use it and shut its resources down."""
    started = time.perf_counter()
    if with_resource:
        for _ in range(jobs):
            with_connection = PerJobContainerWithResource()
            with_connection.helper()
            with_connection.connection()
            with_connection.shutdown_resources()
    else:
        for _ in range(jobs):
            PerJobContainer().helper()
    return (time.perf_counter() - started) / jobs * 1e6


def run(quick: bool) -> list[dict[str, Any]]:
    jobs = 20_000 if quick else 100_000
    repetitions = 3 if quick else 5
    container_jobs = jobs // 10  # a container per job is about a hundred times slower
    without = alternate(
        repetitions,
        {
            "scope": lambda: scope_cost(jobs, with_resource=False),
            "container": lambda: container_cost(container_jobs, with_resource=False),
        },
    )
    with_one = alternate(
        repetitions,
        {
            "scope": lambda: scope_cost(jobs, with_resource=True),
            "container": lambda: container_cost(container_jobs, with_resource=True),
        },
    )
    return [
        row(
            "scope per job, no per-job resource",
            "µs",
            without["scope"],
            (
                f"`JobScope` made, run and closed {jobs:,} times on one thread, for a job that "
                "opens no resource: one empty `contextvars.Context`. The reference builds a "
                f"declarative container with one Factory per job ({container_jobs:,} times) "
                "and calls it."
            ),
            reference="new DeclarativeContainer per job",
            reference_samples=without["container"],
            max_value=5.0,
        ),
        row(
            "scope per job, one per-job resource",
            "µs",
            with_one["scope"],
            (
                "The same with a job that opens one `ContextLocalResource` (a generator that "
                "yields an object and closes it), closed by the scope. The reference builds a "
                "container with a Factory and a Resource per job, calls both and runs "
                "`shutdown_resources()`."
            ),
            reference="new DeclarativeContainer + Resource per job",
            reference_samples=with_one["container"],
        ),
    ]
