"""The engine in process, no HTTP: no-op job throughput and the latency of picking a job up.

Throughput is compared with a bare `queue.Queue` + 4 threads + lock-guarded dict pipeline and
with Huey's `MemoryHuey` consumer on 4 threads. Pickup latency is compared with the same bare
hand-over of one item to an idle thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import alternate, percentile, row
from bench.harness import Engine
from bench.huey_runner import huey_throughput as run_huey
from bench.noop_jobs import NOOP, STAMP
from queueing.jobs import JobQuery, JobStatus

THREADS = 4
HANG_GUARD = 60.0  # seconds; only a hung run waits this long


# Throughput ------------------------------------------------------------------------------------


def engine_throughput(jobs: int) -> float:
    """Submit `jobs` no-op jobs from this thread while 4 workers run them; return jobs/s."""
    with Engine({"workers": {"threads": THREADS}, "queue": {"max_size": jobs}}) as engine:
        started = time.perf_counter()
        for _ in range(jobs):
            engine.submit(NOOP)
        engine.join()
        elapsed = time.perf_counter() - started
        succeeded = engine.service.store.list_jobs(JobQuery(JobStatus.SUCCEEDED, limit=jobs))
        if len(succeeded) != jobs:
            raise RuntimeError(f"only {len(succeeded)} of {jobs} no-op jobs succeeded")
    return jobs / elapsed


def bare_throughput(jobs: int) -> float:
    """Run the same work on a queue, 4 threads and a lock-guarded dict; return jobs/s."""
    work: queue.Queue[int | None] = queue.Queue()
    lock = threading.Lock()  # guards statuses
    statuses: dict[int, str] = {}

    def do_nothing() -> None:
        return None

    def run() -> None:
        while True:
            item = work.get()
            if item is None:
                work.task_done()
                return
            with lock:
                statuses[item] = "running"
            do_nothing()
            with lock:
                statuses[item] = "succeeded"
            work.task_done()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    for item in range(jobs):
        with lock:
            statuses[item] = "queued"
        work.put(item)
    work.join()
    elapsed = time.perf_counter() - started
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join(HANG_GUARD)
    assert all(status == "succeeded" for status in statuses.values())
    return jobs / elapsed


def huey_throughput(jobs: int) -> float:
    """Run the same work on Huey's in-memory storage and consumer with 4 threads; return jobs/s."""
    from huey import MemoryHuey

    return run_huey(MemoryHuey("backburner-bench", utc=True), jobs)


# Pickup latency --------------------------------------------------------------------------------


def engine_latency(jobs: int) -> tuple[list[float], list[float]]:
    """Submit one job at a time to idle workers; return submit → running and → finished, in µs.

    "Running" is when the job's handler started (the `stamp` job type records it), which is
    after the worker marked the job running. "Finished" is when the submitting thread, blocked
    in `wait_for_change`, reads the final status, as a long-polling client would.
    """
    to_running: list[float] = []
    to_finished: list[float] = []
    with Engine({"workers": {"threads": THREADS}}) as engine:
        store = engine.service.store
        for _ in range(jobs):
            submitted = time.perf_counter()
            job = engine.submit(STAMP)
            current = store.get(job.id)
            while not current.status.is_final:
                current = store.wait_for_change(job.id, current.version, HANG_GUARD)
            finished = time.perf_counter()
            assert current.status is JobStatus.SUCCEEDED
            assert current.result is not None
            to_running.append((current.result["started"] - submitted) * 1e6)
            to_finished.append((finished - submitted) * 1e6)
    return to_running, to_finished


def bare_latency(jobs: int) -> tuple[list[float], list[float]]:
    """Hand items one at a time through a `queue.Queue` to 4 idle threads; return latencies."""
    work: queue.Queue[tuple[list[float], threading.Event] | None] = queue.Queue()

    def run() -> None:
        while (item := work.get()) is not None:
            stamps, finished = item
            stamps.append(time.perf_counter())
            finished.set()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    to_running: list[float] = []
    to_finished: list[float] = []
    for _ in range(jobs):
        stamps: list[float] = []
        finished = threading.Event()
        submitted = time.perf_counter()
        work.put((stamps, finished))
        if not finished.wait(HANG_GUARD):
            raise TimeoutError("a bare worker thread did not take its item")
        done = time.perf_counter()
        to_running.append((stamps[0] - submitted) * 1e6)
        to_finished.append((done - submitted) * 1e6)
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join(HANG_GUARD)
    return to_running, to_finished


def _latency_rows(repetitions: int, jobs: int) -> list[dict[str, Any]]:
    results: dict[str, list[tuple[list[float], list[float]]]] = {"engine": [], "bare": []}

    def measure(name: str, function: Callable[[int], tuple[list[float], list[float]]]) -> float:
        results[name].append(function(jobs))
        return 0.0

    alternate(
        repetitions,
        {
            "engine": lambda: measure("engine", engine_latency),
            "bare": lambda: measure("bare", bare_latency),
        },
    )
    # Drop the warm-up runs.
    engine_runs, bare_runs = results["engine"][1:], results["bare"][1:]
    rows = []
    for index, stage in enumerate(("running", "finished")):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            measured = [percentile(sorted(run[index]), fraction) for run in engine_runs]
            reference = [percentile(sorted(run[index]), fraction) for run in bare_runs]
            extra: dict[str, Any] = {}
            if stage == "running" and label == "p50":
                extra = {
                    "max_value": 100.0,
                    "holds_back": (
                        "Between the submit and the handler the engine writes the record, "
                        "enqueues, wakes a worker (a thread switch that the bare reference "
                        "pays too), marks the job running under the store lock and opens its "
                        "scope."
                    ),
                }
            rows.append(
                row(
                    f"pickup latency {label}, submit → {stage}",
                    "µs",
                    measured,
                    (
                        f"{jobs} no-op jobs one at a time to {THREADS} idle workers, per "
                        f'repetition the {label} of them. "Running" is when the handler '
                        'started; "finished" is when the submitting thread, blocked in '
                        "`wait_for_change`, saw the final status. The reference hands an item "
                        f"through a `queue.Queue` to {THREADS} idle threads and waits on an "
                        "Event."
                    ),
                    reference="bare queue.Queue hand-over",
                    reference_samples=reference,
                    lower_is_better=True,
                    **extra,
                )
            )
    return rows


# The module's rows -----------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, Any]]:
    jobs = 20_000 if quick else 100_000
    repetitions = 3 if quick else 5
    samples = alternate(
        repetitions,
        {
            "engine": lambda: engine_throughput(jobs),
            "bare": lambda: bare_throughput(jobs),
            "huey": lambda: huey_throughput(jobs),
        },
    )
    common = (
        f"{jobs:,} no-op jobs submitted from one thread while {THREADS} worker threads run "
        "them, timed from the first submit until every job finished. Backburner goes through "
        "the same steps as `POST /jobs/noop` after the request is read: parse, record, enqueue; "
        "then mark running, open the scope, run the handler and record the outcome. Logging "
        "is left at Python's default (warnings only)."
    )
    rows = [
        row(
            "engine throughput vs bare pipeline",
            "jobs/s",
            samples["engine"],
            common,
            reference=f"queue.Queue + {THREADS} threads + lock-guarded dict",
            reference_samples=samples["bare"],
            min_ratio=0.5,
            holds_back=(
                "Each job takes several store writes under the lock (create, running, outcome), "
                "a scope and a context object, all on one GIL shared by the submitter and the "
                "workers."
            ),
        ),
        row(
            "engine throughput vs MemoryHuey",
            "jobs/s",
            samples["engine"],
            common + " Huey polls its queue every 1–10 ms when it finds it empty.",
            reference=f"huey MemoryHuey, {THREADS} worker threads",
            reference_samples=samples["huey"],
            min_ratio=1.0,
        ),
    ]
    rows += _latency_rows(repetitions, 2_000 if quick else 10_000)
    return rows
