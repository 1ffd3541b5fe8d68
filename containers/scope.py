"""The per-job scope: resources a job opens on first use, all closed when the job ends.

Each per-job resource is a dependency-injector `ContextLocalResource`, whose instance lives in
a `contextvars` context. A scope runs its job in a fresh context of its own, so two jobs never
share an instance, even on one thread. A scope that opened nothing costs one empty context.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dependency_injector import providers

from queueing.errors import RegistryError, ScopeCloseError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Resources = Mapping[str, providers.ContextLocalResource[Any]]


class JobScope:
    """One job's scope; `run` the job inside it, then `close` it on the same thread."""

    __slots__ = ("_context", "_job_id", "_opened", "_providers")

    def __init__(self, job_id: str, resources: Resources) -> None:
        self._job_id = job_id
        self._providers = resources
        self._context = contextvars.Context()
        self._opened: list[str] = []  # names of the opened resources, in the order of opening

    def run(self, function: Callable[[], T]) -> T:
        return self._context.run(function)

    def resource(self, name: str) -> Any:
        """Open (or return the open) resource `name`; only valid inside `run`."""
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise RegistryError(f"no per-job resource named {name!r}; registered: {known}")
        instance = provider()
        if name not in self._opened:
            self._opened.append(name)
            logger.debug("Job %s opened resource %s.", self._job_id, name)
        return instance

    def close(self) -> None:
        """Close every opened resource in reverse order, then raise what failed.

        Closes them one by one instead of `shutdown_resources()`, which stops at the first
        teardown that raises and would leave the others open.
        """
        failures: list[tuple[str, BaseException]] = []
        while self._opened:
            name = self._opened.pop()
            try:
                self._context.run(self._providers[name].shutdown)
            # One failing teardown must not keep the others open.
            except Exception as error:
                logger.exception("Job %s: closing resource %s failed.", self._job_id, name)
                failures.append((name, error))
        if failures:
            raise ScopeCloseError(failures)


class ScopeFactory:
    """Makes the scope of each job from the container's per-job resource providers."""

    def __init__(self, resources: Resources) -> None:
        self._resources = dict(resources)

    def __call__(self, job_id: str) -> JobScope:
        return JobScope(job_id, self._resources)
