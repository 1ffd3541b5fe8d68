"""The per-job scope: resources open on first use and close on every exit path."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from containers.scope import JobScope, ScopeFactory
from queueing.context import JobContext
from queueing.errors import RegistryError, ScopeCloseError
from queueing.jobs import JobStatus
from queueing.local_files import LocalFileStore
from tests.support import HANG_GUARD, Work, build_engine


class Tracker:
    """Records each resource's opening and closing, with the thread that did it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (action, resource, thread name)

    def factory(self, name: str, *, fail_on_close: bool = False) -> Any:
        def open_resource(settings: Mapping[str, Any]) -> Iterator[str]:
            self.events.append(("open", name, threading.current_thread().name))
            yield f"{name}-instance"
            self.events.append(("close", name, threading.current_thread().name))
            if fail_on_close:
                raise OSError(f"{name} would not close")

        return open_resource

    def closed(self) -> list[str]:
        return [name for action, name, _ in self.events if action == "close"]


def scope_with(tracker: Tracker, failing: set[str] = frozenset()) -> ScopeFactory:  # type: ignore[assignment]
    names = ["database", "folder", "handle"]
    return ScopeFactory(
        {
            name: providers.ContextLocalResource(
                tracker.factory(name, fail_on_close=name in failing), {}
            )
            for name in names
        }
    )


def test_unused_scope_opens_nothing() -> None:
    tracker = Tracker()
    scope = scope_with(tracker)("job-1")
    assert scope.run(lambda: 42) == 42
    scope.close()
    assert tracker.events == []


def test_resources_close_in_reverse_order() -> None:
    tracker = Tracker()
    scope = scope_with(tracker)("job-1")
    scope.run(lambda: [scope.resource(n) for n in ("database", "folder", "database", "handle")])
    scope.close()
    assert tracker.closed() == ["handle", "folder", "database"]


def test_each_job_gets_its_own_instance_on_one_thread() -> None:
    tracker = Tracker()
    factory = scope_with(tracker)
    first, second = factory("job-1"), factory("job-2")
    first.run(lambda: first.resource("database"))
    second.run(lambda: second.resource("database"))
    first.close()
    second.close()
    assert [a for a, name, _ in tracker.events if name == "database"] == [
        "open",
        "open",
        "close",
        "close",
    ]


def test_failing_cleanup_does_not_skip_the_others() -> None:
    tracker = Tracker()
    scope = scope_with(tracker, failing={"folder"})("job-1")
    scope.run(lambda: [scope.resource(n) for n in ("database", "folder", "handle")])
    with pytest.raises(ScopeCloseError) as caught:
        scope.close()
    assert tracker.closed() == ["handle", "folder", "database"]
    assert [name for name, _ in caught.value.failures] == ["folder"]
    assert "folder would not close" in str(caught.value)


def test_unknown_resource_names_the_registered_ones() -> None:
    scope = JobScope("job-1", {})
    with pytest.raises(RegistryError, match="no per-job resource named 'cache'"):
        scope.run(lambda: scope.resource("cache"))


def run_job(tmp_path: Path, tracker: Tracker, handler: Any, failing: set[str]) -> Any:
    resources = {
        name: tracker.factory(name, fail_on_close=name in failing)
        for name in ("database", "folder")
    }
    engine = build_engine(
        [("only", handler)], LocalFileStore(tmp_path), threads=1, resources=resources
    )
    engine.pool.start()
    try:
        job_id = engine.submit()
        return engine.wait_finished(job_id)
    finally:
        engine.pool.stop(HANG_GUARD)


def test_scope_closes_after_success_on_job_thread(tmp_path: Path) -> None:
    tracker = Tracker()

    def handler(n: Work, ctx: JobContext) -> dict[str, Any]:
        return {"used": [ctx.resource("database"), ctx.resource("folder")]}

    job = run_job(tmp_path, tracker, handler, failing=set())
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == {"used": ["database-instance", "folder-instance"]}
    assert tracker.closed() == ["folder", "database"]
    threads = {thread for _, _, thread in tracker.events}
    assert threads == {"backburner-worker-1"}


def test_scope_closes_after_raising_handler(tmp_path: Path) -> None:
    tracker = Tracker()

    def handler(n: Work, ctx: JobContext) -> None:
        ctx.resource("database")
        ctx.resource("folder")
        raise RuntimeError("handler failed")

    job = run_job(tmp_path, tracker, handler, failing=set())
    assert job.status is JobStatus.FAILED
    assert tracker.closed() == ["folder", "database"]


def test_failing_cleanup_fails_job_and_closes_the_rest(tmp_path: Path) -> None:
    tracker = Tracker()

    def handler(n: Work, ctx: JobContext) -> dict[str, Any]:
        ctx.resource("database")
        ctx.resource("folder")
        return {"ok": True}

    job = run_job(tmp_path, tracker, handler, failing={"folder"})
    assert tracker.closed() == ["folder", "database"]
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert "folder would not close" in job.error.message
