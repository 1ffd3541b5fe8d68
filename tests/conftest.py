"""Shared fixtures: settings in a temporary folder, and the real service under waitress."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from app import EXTENSION, Runtime, Server, create_app
from containers.application import ApplicationContainer, build_container
from containers.settings import load_settings
from tests.support import SHARED_DATA

# Guards against a hang only; every wait in the tests ends on an event long before this.
HANG_GUARD = 30.0


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {section: dict(keys) for section, keys in base.items()}
    for section, keys in extra.items():
        merged.setdefault(section, {}).update(keys)
    return merged


def make_settings(tmp_path: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Checked settings for a test: files under `tmp_path`, port 0, a short grace period."""
    base = {
        "server": {"port": 0},
        "storage": {"data_dir": str(tmp_path / "var")},
        "csv": {"summary_db": str(tmp_path / "csv-summaries.sqlite3")},
        "queue": {"sqlite_path": str(tmp_path / "backburner.sqlite3")},
        "shutdown": {"grace_seconds": 1},
    }
    return load_settings(environ={}, overrides=merge(base, overrides or {}))


@pytest.fixture
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), (
        f"the sample input files are missing at {SHARED_DATA}; "
        "set BACKBURNER_SHARED_DATA to the folder that holds images/ and csv/"
    )
    return SHARED_DATA


@dataclass
class LiveService:
    """A real Backburner app served by waitress on 127.0.0.1, with a requests session."""

    url: str
    container: ApplicationContainer
    runtime: Runtime
    server: Server
    thread: threading.Thread
    http: requests.Session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=HANG_GUARD, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=HANG_GUARD, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.delete(self.url + path, timeout=HANG_GUARD, **kwargs)

    def wait_until_finished(self, job_id: str) -> dict[str, Any]:
        """Long-poll a job until it is finished and return its document."""
        while True:
            document = self.get(f"/jobs/{job_id}", params={"wait": 10}).json()
            if document["status"] in ("succeeded", "failed", "canceled"):
                return document

    def stop(self) -> None:
        self.runtime.shutdown()
        self.server.stop()
        self.thread.join(HANG_GUARD)
        self.http.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., LiveService]]:
    """Start the real service; call it with nested setting overrides, e.g. `{"workers": ...}`."""
    started: list[LiveService] = []

    def start(overrides: Mapping[str, Any] | None = None) -> LiveService:
        settings = make_settings(tmp_path, overrides)
        container = build_container(settings)
        app = create_app(container)
        runtime: Runtime = app.extensions[EXTENSION]
        server = Server(app, settings)
        runtime.start()
        thread = threading.Thread(target=server.serve, name="test-waitress", daemon=True)
        thread.start()
        service = LiveService(
            url=f"http://127.0.0.1:{server.port}",
            container=container,
            runtime=runtime,
            server=server,
            thread=thread,
            http=requests.Session(),
        )
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def service(start_service: Callable[..., LiveService]) -> LiveService:
    """The service with default settings (memory backend, 4 worker threads)."""
    return start_service()
