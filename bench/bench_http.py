"""HTTP accept and status read under waitress, each beside a bare Flask app on the same server.

Both servers run as their own processes (see `bench.http_server`) and `wrk` loads one at a
time over loopback: 2 wrk threads, 16 connections, waitress with 8 threads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.common import REPO_ROOT, alternate, row

CONNECTIONS = 16
WRK_THREADS = 2
START_TIMEOUT = 60.0  # seconds for a server to start listening
WAIT_FOR_WORKERS = 60.0  # seconds for the workers to finish what the load left queued

POST_SCRIPT = """\
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
"""

_REQUESTS_IN = re.compile(r"(\d+) requests in ([\d.]+)s")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors:\s+(.*)")


class MissingTool(RuntimeError):
    """Raised when `wrk` is not installed and cannot be installed from here."""


def preflight() -> None:
    """Check that wrk is installed; install it when running as root, else raise with the command."""
    if shutil.which("wrk"):
        return
    command = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0:
        raise MissingTool(
            "the HTTP benchmarks need wrk; install it with: sudo apt-get install -y wrk"
        )
    print("wrk is missing; installing it with: apt-get install -y wrk", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(command, check=True)
    if not shutil.which("wrk"):
        raise MissingTool("apt-get did not install wrk; install it with: apt-get install -y wrk")


class RunningServer:
    """One `bench.http_server` process and the port it listens on."""

    def __init__(self, kind: str, folder: Path, log: TextIO) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.http_server", kind, str(folder)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the {kind} server did not start; see its log {log.name}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def servers(folder: Path) -> Iterator[dict[str, RunningServer]]:
    with ExitStack() as stack:
        started: dict[str, RunningServer] = {}
        for kind in ("backburner", "bare"):
            log = stack.enter_context(open(folder / f"{kind}.log", "w", encoding="utf-8"))
            (folder / kind).mkdir()
            server = RunningServer(kind, folder / kind, log)
            stack.callback(server.stop)
            started[kind] = server
        yield started


@dataclass(frozen=True)
class LoadResult:
    """The outcome of one wrk run."""

    per_second: float  # 2xx responses per second
    refused: int  # responses that were not 2xx (503 from a full queue, for example)


def wrk(url: str, seconds: float, script: Path | None = None) -> LoadResult:
    """Load `url` for `seconds`; return the rate of 2xx responses and the count of others."""
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
    ]
    if script is not None:
        command += ["-s", str(script)]
    completed = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    output = completed.stdout
    socket_errors = _SOCKET_ERRORS.search(output)
    if socket_errors:
        raise RuntimeError(f"wrk had socket errors on {url}: {socket_errors.group(1)}")
    total = _REQUESTS_IN.search(output)
    if total is None:
        raise RuntimeError(f"cannot read the request count from wrk's output:\n{output}")
    refused = _NON_2XX.search(output)
    refused_count = int(refused.group(1)) if refused else 0
    answered = int(total.group(1)) - refused_count
    return LoadResult(answered / float(total.group(2)), refused_count)


def _request(method: str, url: str, body: bytes | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.load(response))


def finished_job(server: RunningServer) -> str:
    """Submit one no-op job, wait until it has finished and return its id."""
    job_id = str(_request("POST", f"{server.url}/jobs/noop", b"{}")["id"])
    while True:
        document = _request("GET", f"{server.url}/jobs/{job_id}?wait=10")
        if document["status"] == "succeeded":
            return job_id


def wait_until_idle(server: RunningServer) -> None:
    """Wait until the workers ran every job the load submitted; raise if they do not."""
    deadline = time.monotonic() + WAIT_FOR_WORKERS
    while time.monotonic() < deadline:
        health = _request("GET", f"{server.url}/health")
        if health["queue_depth"] == 0 and health["workers"]["busy"] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the workers did not finish the queued jobs in {WAIT_FOR_WORKERS:g} s")


def run(quick: bool) -> list[dict[str, Any]]:
    seconds = 2.0 if quick else 5.0
    repetitions = 3 if quick else 5
    refused: dict[str, int] = {"backburner": 0, "bare": 0}

    def load(kind: str, url: str, script: Path | None = None) -> float:
        result = wrk(url, seconds, script)
        refused[kind] += result.refused
        return result.per_second

    with tempfile.TemporaryDirectory(prefix="backburner-bench-http-") as name:
        folder = Path(name)
        script = folder / "post.lua"
        script.write_text(POST_SCRIPT, encoding="utf-8")
        with servers(folder) as started:
            backburner, bare = started["backburner"], started["bare"]
            accept = alternate(
                repetitions,
                {
                    "backburner": lambda: load("backburner", f"{backburner.url}/jobs/noop", script),
                    "bare": lambda: load("bare", f"{bare.url}/jobs/noop", script),
                },
            )
            accept_refused = dict(refused)
            wait_until_idle(backburner)
            job_id = finished_job(backburner)
            read = alternate(
                repetitions,
                {
                    "backburner": lambda: load("backburner", f"{backburner.url}/jobs/{job_id}"),
                    "bare": lambda: load("bare", f"{bare.url}/jobs/{job_id}"),
                },
            )
    read_refused = {kind: refused[kind] - accept_refused[kind] for kind in refused}
    load_text = (
        f"wrk with {WRK_THREADS} threads and {CONNECTIONS} connections over loopback for "
        f"{seconds:g} s per repetition; waitress with 8 threads for both apps, each in its own "
        "process on the same machine as wrk, both logging at INFO to a file as "
        "`backburner serve` does. The figure counts 2xx answers only."
    )
    return [
        row(
            "HTTP accept: POST /jobs/noop",
            "req/s",
            accept["backburner"],
            (
                f"{load_text} Backburner validates the body, records the job, enqueues it and "
                "answers 202 with the job document while its 4 worker threads run the jobs in "
                "the same process (one log line per finished job). It refused "
                f"{accept_refused['backburner']:,} requests with 503 over all repetitions, "
                "warm-up included (a full queue: 1,000 jobs waiting), and its queue was "
                "empty again after the load. The reference parses the JSON body and answers "
                "202 with a job-shaped document."
            ),
            reference="bare Flask route answering 202",
            reference_samples=accept["bare"],
            min_ratio=0.9,
            holds_back=(
                "The 4 worker threads share the GIL with waitress's 9 threads. Each job takes "
                "the queue and store locks twice more and writes a log line; when a worker "
                "blocks on any of these it gives up the GIL and queues for it behind the "
                "request threads, which win it back first after their socket calls. So the "
                "workers fall behind in bursts, and a queue that reaches 1,000 jobs answers "
                "503. Logging through a queue handler would take the log writes off the "
                "workers."
            ),
        ),
        row(
            "HTTP status read: GET /jobs/<id>",
            "req/s",
            read["backburner"],
            (
                f"{load_text} The job read has finished, so the answer has no Retry-After, and "
                "its encoded document comes from the cache of the last version sent. The "
                "reference answers with a job-shaped document of the same size, built and "
                "encoded per request. Answers that were not 2xx: "
                f"{read_refused['backburner']} and {read_refused['bare']}."
            ),
            reference="bare Flask GET with a similar JSON",
            reference_samples=read["bare"],
            min_ratio=0.9,
        ),
    ]
