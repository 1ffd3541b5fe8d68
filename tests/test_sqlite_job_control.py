"""The job-control suite over HTTP (cancel, waits, idempotency, retries...) on the SQLite backend.

The tests are those of `tests/test_job_control.py`, collected here a second time with the
`start_service` and `service` fixtures below, which put every service on `queue.backend:
sqlite`. A test added there runs here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests import test_job_control
from tests.conftest import LiveService, merge

SQLITE = {"queue": {"backend": "sqlite"}}

globals().update(
    {name: test for name, test in vars(test_job_control).items() if name.startswith("test_")}
)


@pytest.fixture
def start_service(
    start_service: Callable[..., LiveService],
) -> Callable[..., LiveService]:
    def start_on_sqlite(overrides: Mapping[str, Any] | None = None) -> LiveService:
        return start_service(merge(SQLITE, overrides or {}))

    return start_on_sqlite


@pytest.fixture
def service(start_service: Callable[..., LiveService]) -> LiveService:
    return start_service()


def test_services_here_run_on_sqlite(service: LiveService) -> None:
    assert service.get("/health").json()["backend"]["name"] == "sqlite"
