"""The `backburner` command: client subcommands, `serve` with signals, `worker`, settings errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from app import main
from tests.conftest import HANG_GUARD, LiveService

ROOT = Path(__file__).resolve().parents[1]
BACKBURNER = Path(sys.executable).parent / "backburner"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Client commands ---------------------------------------------------------------------------------


def test_submit_and_wait_exits_0_on_success(
    service: LiveService, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "submit", "delay", "--json", '{"seconds": 0}', "--wait", "20", "--url", service.url
    )
    assert code == 0
    assert json.loads(out)["status"] == "succeeded"


def test_failed_job_exits_1(
    start_service: Callable[..., LiveService], capsys: pytest.CaptureFixture[str]
) -> None:
    service = start_service({"jobs": {"max_attempts": 1}})
    code, out, _ = run_cli(
        capsys,
        "submit",
        "delay",
        "--json",
        '{"seconds": 0, "fail": true}',
        "--wait",
        "20",
        "--url",
        service.url,
    )
    assert code == 1
    assert json.loads(out)["status"] == "failed"


def test_submit_uploads_file(
    service: LiveService, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = shared_data / "images" / "edge" / "hopper.jpg"
    code, out, _ = run_cli(
        capsys,
        "submit",
        "thumbnails",
        "--file",
        f"image={photo}",
        "--wait",
        "20",
        "--url",
        service.url,
    )
    assert code == 0
    assert json.loads(out)["type"] == "thumbnails"


def test_status_cancel_and_jobs(service: LiveService, capsys: pytest.CaptureFixture[str]) -> None:
    job = service.post("/jobs/delay", json={"seconds": 600}).json()
    code, out, _ = run_cli(capsys, "status", job["id"], "--url", service.url)
    assert code == 3  # still queued or running
    assert json.loads(out)["id"] == job["id"]
    code, out, _ = run_cli(capsys, "cancel", job["id"], "--url", service.url)
    assert code == 0
    code, out, _ = run_cli(capsys, "status", job["id"], "--wait", "20", "--url", service.url)
    assert code == 1
    assert json.loads(out)["status"] == "canceled"
    code, out, _ = run_cli(capsys, "jobs", "--status", "canceled", "--url", service.url)
    assert code == 0
    assert [j["id"] for j in json.loads(out)["jobs"]] == [job["id"]]


def test_wait_that_runs_out_exits_3(
    service: LiveService, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "submit",
        "delay",
        "--json",
        '{"seconds": 600}',
        "--wait",
        "0.2",
        "--url",
        service.url,
    )
    assert code == 3
    assert json.loads(out)["status"] in ("queued", "running")


def test_invalid_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "jobs", "--url", "not-a-url")
    assert code == 2
    assert "invalid URL" in err


def test_refused_request_exits_2_with_detail(
    service: LiveService, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "submit", "delay", "--json", "{}", "--url", service.url)
    assert code == 2
    assert "returned 422" in err
    assert "seconds: missing" in err


def test_unreachable_service_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run_cli(capsys, "status", "x", "--url", f"http://127.0.0.1:{port}")
    assert code == 2
    assert "cannot reach" in err


def test_bad_file_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "submit", "thumbnails", "--file", "photo.jpg")
    assert code == 2
    assert "FIELD=PATH" in err


def test_key_from_environment_is_sent(
    start_service: Callable[..., LiveService],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = start_service({"auth": {"keys": ["secret"]}})
    monkeypatch.setenv("BACKBURNER_URL", service.url)
    code, _, err = run_cli(capsys, "jobs")
    assert code == 2
    assert "401" in err
    monkeypatch.setenv("BACKBURNER_KEY", "secret")
    code, out, _ = run_cli(capsys, "jobs")
    assert code == 0
    assert json.loads(out)["jobs"] == []


# Server processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BACKBURNER_")}
    environ.update(
        BACKBURNER_STORAGE__DATA_DIR=str(tmp_path / "var"),
        BACKBURNER_CSV__SUMMARY_DB=str(tmp_path / "csv.sqlite3"),
        PYTHONPATH=str(ROOT),
    )
    return environ


class ServerProcess:
    """`backburner serve` in a subprocess on a free port, with its log in a file."""

    def __init__(self, environ: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [str(BACKBURNER), "serve", "--port", str(self.port), *args],
                cwd=ROOT,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        # A bounded loop of requests: the server responds as soon as it listens.
        for _ in range(600):
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.log.read_text()}")
            try:
                requests.get(self.url + "/health", timeout=1)
                return
            except requests.ConnectionError:
                self.process_wait(0.05)
        raise AssertionError(f"the server never answered:\n{self.log.read_text()}")

    def process_wait(self, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(seconds)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(HANG_GUARD)


@pytest.fixture
def start_server(
    server_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(*args: str, **settings: str) -> ServerProcess:
        environ = {**server_env, **settings}
        server = ServerProcess(environ, tmp_path / f"server-{len(servers)}.log", *args)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def test_sigterm_lets_running_job_finish_within_grace(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(BACKBURNER_SHUTDOWN__GRACE_SECONDS="30")
    job = requests.post(server.url + "/jobs/delay", json={"seconds": 1}, timeout=HANG_GUARD)
    document = job.json()
    while document["status"] == "queued":
        document = requests.get(
            f"{server.url}/jobs/{document['id']}", params={"wait": 5}, timeout=HANG_GUARD
        ).json()
    server.process.send_signal(signal.SIGTERM)
    health = requests.get(server.url + "/health", timeout=HANG_GUARD)
    while health.status_code == 200:
        health = requests.get(server.url + "/health", timeout=HANG_GUARD)
    assert health.status_code == 503
    assert health.json()["status"] == "shutting_down"
    refused = requests.post(server.url + "/jobs/delay", json={"seconds": 0}, timeout=HANG_GUARD)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    assert server.process.wait(HANG_GUARD) == 0
    log = server.log.read_text()
    assert "1 jobs finished during the grace period" in log
    assert "failed" not in log


def test_sigterm_fails_jobs_past_grace_on_memory_backend(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(
        BACKBURNER_SHUTDOWN__GRACE_SECONDS="0.2",
        BACKBURNER_WORKERS__THREADS="1",
    )
    running = requests.post(server.url + "/jobs/delay", json={"seconds": 600}, timeout=HANG_GUARD)
    queued = requests.post(server.url + "/jobs/delay", json={"seconds": 600}, timeout=HANG_GUARD)
    assert running.status_code == queued.status_code == 202
    document = running.json()
    while document["status"] == "queued":
        document = requests.get(
            f"{server.url}/jobs/{document['id']}", params={"wait": 5}, timeout=HANG_GUARD
        ).json()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(HANG_GUARD) == 0
    assert "Shutdown: 1 running and 1 queued jobs failed." in server.log.read_text()


def test_serve_with_bad_setting_exits_2_naming_it(server_env: dict[str, str]) -> None:
    environ = {**server_env, "BACKBURNER_QUEUE__MAX_SIZE": "many"}
    result = subprocess.run(
        [str(BACKBURNER), "serve"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert result.returncode == 2
    assert "queue.max_size" in result.stderr
    assert "BACKBURNER_QUEUE__MAX_SIZE" in result.stderr


def test_worker_refuses_memory_backend(server_env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BACKBURNER), "worker"],
        cwd=ROOT,
        env=server_env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert result.returncode == 2
    assert "memory backend cannot be shared" in result.stderr


def test_make_run_passes_host_and_port() -> None:
    result = subprocess.run(
        ["make", "-n", "run", "HOST=127.0.0.2", "PORT=9123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=True,
    )
    assert "serve --host 127.0.0.2 --port 9123" in result.stdout
    plain = subprocess.run(
        ["make", "-n", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=True,
        env={k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")},
    )
    assert "--host" not in plain.stdout
    assert "--port" not in plain.stdout
