"""The engine as the container builds it, driven the way the HTTP routes drive it, minus HTTP."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import settings_for
from containers.application import ApplicationContainer, build_container
from handlers.registry import Intake, Registry, Submission
from queueing.jobs import Job
from queueing.service import JobService
from queueing.transitions import new_job
from queueing.workers import WorkerPool

JOIN_TIMEOUT = 600.0  # a guard against a hang only; every run ends long before it

EMPTY_JSON = Submission("json", json={})


class Engine:
    """A container's job service and worker pool, started, with files in a temporary folder."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="backburner-bench-")
        self.settings = settings_for(Path(self._folder.name), overrides or {})
        self.container: ApplicationContainer = build_container(self.settings)
        self.service: JobService = self.container.job_service()
        self.pool: WorkerPool = self.container.worker_pool()
        self.registry: Registry = self.container.registry()
        self._handler_names: dict[str, list[str]] = {}
        self.pool.start()

    def submit(self, job_type: str, submission: Submission = EMPTY_JSON) -> Job:
        """Accept one job exactly as `POST /jobs/<type>` does after reading the request."""
        kind = self.registry.get(job_type)
        job_id = self.service.new_job_id()
        notification = kind.parse(submission, Intake(job_id, self.settings, self.service.files))
        names = self._handler_names.get(job_type)
        if names is None:
            names = [handler.name for handler in self.registry.handlers_for(kind.notification)]
            self._handler_names[job_type] = names
        job = new_job(job_id, job_type, names, self.service.clock.now())
        return self.service.submit(job, notification)

    def join(self) -> None:
        """Wait until every job submitted so far has finished; raise if that takes too long."""
        if not self.pool.join(JOIN_TIMEOUT):
            raise TimeoutError(f"the worker pool did not finish its jobs in {JOIN_TIMEOUT:g} s")

    def close(self) -> None:
        self.pool.stop(self.settings["shutdown"]["grace_seconds"])
        self.service.store.close()
        self._folder.cleanup()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
