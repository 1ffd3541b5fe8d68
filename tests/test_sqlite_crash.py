"""The real service as a subprocess on SQLite: SIGKILL, a poison job, SIGTERM, two processes.

Each test starts `backburner serve` (and `backburner worker`) from the virtual environment
with settings in `BACKBURNER_*` variables, waits for the line the process logs once it serves,
and talks to it over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from queueing.clock import SystemClock
from queueing.sqlite import SqliteDatabase
from queueing.sqlite_store import SqliteStatusStore

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HANG_GUARD = 60.0  # seconds; only a hung process makes a test wait this long
FINAL = ("succeeded", "failed", "canceled")
# What a request raises when the service dies before or during its response.
DIED = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Backburner:
    """One run of a `backburner` command, with its log collected line by line."""

    def __init__(self, command: list[str], env: Mapping[str, str], ready_line: str) -> None:
        self.lines: list[str] = []
        self._ready_line = ready_line
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.lines.append(line)
                if self._ready_line in line:
                    self._ready.set()
        self._ready.set()  # the process ended, so a thread waiting for readiness must check

    def wait_ready(self) -> bool:
        """Wait until the process logs that it is up; False if it ended first."""
        assert self._ready.wait(HANG_GUARD), f"no {self._ready_line!r} in the log:\n{self.log}"
        return self.process.poll() is None

    def stop(self, signal_number: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        code = self.process.wait(HANG_GUARD)
        self._reader.join(HANG_GUARD)
        return code

    @property
    def log(self) -> str:
        return "".join(self.lines)


class Service:
    """`backburner serve` on a free port, restartable on the same database file."""

    def __init__(self, tmp_path: Path, settings: Mapping[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = service_environment(tmp_path, settings)
        self.runs: list[Backburner] = []
        self.http = requests.Session()

    def start(self, **settings: str) -> Backburner:
        """Start the service; return once it serves, or once it died on its own."""
        env = {**self.env, **settings}
        command = [str(BIN / "backburner"), "serve", "--port", str(self.port)]
        run = Backburner(command, env, "Serving on http")
        self.runs.append(run)
        if run.wait_ready():
            try:
                health = self.http.get(f"{self.url}/health", timeout=HANG_GUARD)
            except DIED:
                # The poison job killed it during the request: it must be gone, not hung.
                run.process.wait(HANG_GUARD)
            else:
                assert health.status_code == 200, health.text
        return run

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=HANG_GUARD, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=HANG_GUARD, **kwargs)

    def wait_until_finished(self, job_id: str) -> dict[str, Any]:
        """Long-poll a job until it is finished; raises one of `DIED` if the service dies."""
        while True:
            document: dict[str, Any] = self.get(f"/jobs/{job_id}", params={"wait": 10}).json()
            if document["status"] in FINAL:
                return document

    @property
    def log(self) -> str:
        return "".join(run.log for run in self.runs)

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop(signal.SIGKILL)
        self.http.close()


def service_environment(tmp_path: Path, settings: Mapping[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BACKBURNER")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "BACKBURNER_QUEUE__BACKEND": "sqlite",
            "BACKBURNER_QUEUE__SQLITE_PATH": str(tmp_path / "backburner.sqlite3"),
            "BACKBURNER_STORAGE__DATA_DIR": str(tmp_path / "var"),
            "BACKBURNER_CSV__SUMMARY_DB": str(tmp_path / "csv-summaries.sqlite3"),
            "BACKBURNER_HANDLERS__MODULES": '["tests.jobtypes"]',
            "BACKBURNER_JOBS__LEASE_SECONDS": "1",
            "BACKBURNER_SHUTDOWN__GRACE_SECONDS": "1",
            "BACKBURNER_LOGGING__LEVEL": "INFO",
            **settings,
        }
    )
    return env


MakeService = Callable[..., Service]


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[MakeService]:
    services: list[Service] = []

    def make(**settings: str) -> Service:
        service = Service(tmp_path, settings)
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop_all()


def read_job(tmp_path: Path, job_id: str) -> Any:
    """Read a job's record straight from the database file, while no service runs."""
    database = SqliteDatabase(tmp_path / "backburner.sqlite3")
    try:
        return SqliteStatusStore(database, SystemClock()).get(job_id)
    finally:
        database.close()


def succeeded_lines(log: str) -> Counter[str]:
    """Count, per job id, the log lines reporting that an attempt ended succeeded."""
    counts: Counter[str] = Counter()
    for line in log.splitlines():
        if line.endswith("ended succeeded."):
            counts[line.split("Job ", 1)[1].split(" ", 1)[0]] += 1
    return counts


# Tests -------------------------------------------------------------------------------------------


def test_sigkill_loses_no_job_nor_success(make_service: MakeService) -> None:
    service = make_service(BACKBURNER_WORKERS__THREADS="4")
    service.start()
    ids = [service.post("/jobs/delay", json={"seconds": 0.2}).json()["id"] for _ in range(100)]

    # Kill the service while jobs run: once the 20th job has finished, four more are running.
    assert service.wait_until_finished(ids[19])["status"] == "succeeded"
    before = {job["id"]: job for job in service.get("/jobs", params={"limit": 100}).json()["jobs"]}
    service.runs[-1].stop(signal.SIGKILL)
    succeeded_before = {job_id for job_id, job in before.items() if job["status"] == "succeeded"}

    service.start()
    after = {job_id: service.wait_until_finished(job_id) for job_id in ids}

    assert [job["status"] for job in after.values()] == ["succeeded"] * 100
    ran_twice = set()
    for job_id, job in after.items():
        clean = [a for a in job["attempts"] if a["error"] is None]
        lost = [a for a in job["attempts"] if a["error"] is not None]
        assert len(clean) == 1, job
        assert all(a["error"]["type"] == "worker_lost" for a in lost), job
        if lost:
            ran_twice.add(job_id)
    # A job seen succeeded before the kill was not run again, nor recorded again.
    for job_id, job in before.items():
        if job["status"] == "succeeded":
            assert after[job_id]["finished_at"] == job["finished_at"]
            assert after[job_id]["version"] == job["version"]
    # Only the jobs running when the process died ran a second time: one per worker at most.
    assert 1 <= len(ran_twice) <= 4
    assert ran_twice.isdisjoint(succeeded_before)
    # Each success is logged once; a process killed right after a commit may miss a line.
    logged = succeeded_lines(service.log)
    assert max(logged.values()) == 1
    assert len(logged) >= 100 - 4


def test_poison_job_stops_crash_loop(make_service: MakeService) -> None:
    service = make_service(BACKBURNER_JOBS__MAX_ATTEMPTS="3")
    service.start(BACKBURNER_WORKERS__THREADS="0")
    crash = service.post("/jobs/crash", json={}).json()["id"]
    others = [service.post("/jobs/noop", json={}).json()["id"] for _ in range(3)]
    assert service.runs[-1].stop(signal.SIGTERM) == 0, service.log

    crashes = 0
    for _ in range(3 + 2):
        run = service.start(BACKBURNER_WORKERS__THREADS="1")
        try:
            document = service.wait_until_finished(crash)
        except DIED:
            document = None
        if document is not None:
            break
        assert run.stop(signal.SIGKILL) == -signal.SIGKILL  # it killed itself
        crashes += 1

    assert crashes == 3
    assert document is not None
    assert document["status"] == "failed"
    assert document["error"]["type"] == "worker_lost"
    assert "gave up after 3 attempts" in document["error"]["message"]
    assert [a["error"]["type"] for a in document["attempts"]] == ["worker_lost"] * 3
    for job_id in others:
        assert service.wait_until_finished(job_id)["status"] == "succeeded"


# `delay` stops at its cancel token, `stubborn` never looks at it: both go back to the queue.
@pytest.mark.parametrize("job_type", ["delay", "stubborn"])
def test_sigterm_requeues_running_job(
    make_service: MakeService, tmp_path: Path, job_type: str
) -> None:
    service = make_service(
        BACKBURNER_SHUTDOWN__GRACE_SECONDS="0.2",
        BACKBURNER_HANDLERS__MODULES='["tests.jobtypes", "tests.test_sqlite_jobtypes"]',
    )
    service.start()
    job_id = service.post(f"/jobs/{job_type}", json={"seconds": 2}).json()["id"]
    document = service.get(f"/jobs/{job_id}").json()
    while document["status"] == "queued":
        document = service.get(f"/jobs/{job_id}", params={"wait": 10}).json()
    assert document["status"] == "running"

    assert service.runs[-1].stop(signal.SIGTERM) == 0, service.log
    stopped = read_job(tmp_path, job_id)
    assert stopped.status == "queued", service.log
    assert stopped.attempts[0].error.type == "shutdown", stopped

    service.start()
    finished = service.wait_until_finished(job_id)
    assert finished["status"] == "succeeded", finished
    assert finished["attempt"] == 2, finished


def test_web_and_worker_processes_share_jobs(make_service: MakeService) -> None:
    # A web process and a worker process, four worker threads each, on one database file:
    # every `delay` job writes its start, four progress reports and its finish.
    service = make_service(BACKBURNER_WORKERS__THREADS="4")
    service.start()
    worker = Backburner([str(BIN / "backburner"), "worker"], service.env, "Worker process started")
    service.runs.append(worker)
    assert worker.wait_ready()

    ids = [service.post("/jobs/delay", json={"seconds": 0.2}).json()["id"] for _ in range(100)]
    finished = [service.wait_until_finished(job_id) for job_id in ids]

    assert [job["status"] for job in finished] == ["succeeded"] * 100
    assert all(job["attempt"] == 1 for job in finished)
    assert "database is locked" not in service.log
    assert " ERROR " not in service.log
    assert "ended succeeded" in worker.log  # the worker process did take part
