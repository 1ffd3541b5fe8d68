"""Huey as a benchmark reference: no-op tasks through its consumer on worker threads."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

THREADS = 4
HANG_GUARD = 60.0  # seconds; only a hung run waits this long
# The consumer installs its own handlers for these; they are put back once it stops.
_CONSUMER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def huey_throughput(
    huey: Any, jobs: int, submit: Callable[[Callable[[], Any]], None] | None = None
) -> float:
    """Run `jobs` no-op tasks through `huey`'s consumer with 4 worker threads; return jobs/s.

    `submit(enqueue)` calls `enqueue` `jobs` times (from this thread when None). Huey's workers
    poll an empty queue; the polling delay is cut from its default 0.1 s to 1 ms (at most
    10 ms), so that waits do not count against it.
    """
    from huey.signals import SIGNAL_COMPLETE

    done = threading.Event()
    lock = threading.Lock()  # guards completed
    completed = [0]

    @huey.task()
    def do_nothing() -> None:
        return None

    @huey.signal(SIGNAL_COMPLETE)
    def count(signal_name: str, task: Any, *args: Any, **kwargs: Any) -> None:
        with lock:
            completed[0] += 1
            if completed[0] == jobs:
                done.set()

    consumer = huey.create_consumer(
        workers=THREADS,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    saved = {number: signal.getsignal(number) for number in _CONSUMER_SIGNALS}
    consumer.start()
    try:
        started = time.perf_counter()
        if submit is None:
            for _ in range(jobs):
                do_nothing()
        else:
            submit(do_nothing)
        if not done.wait(HANG_GUARD):
            raise TimeoutError(f"Huey finished {completed[0]} of {jobs} jobs")
        elapsed = time.perf_counter() - started
    finally:
        consumer.stop(graceful=True)
        for number, handler in saved.items():
            signal.signal(number, handler)
    return jobs / elapsed
