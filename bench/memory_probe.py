"""The process the memory benchmark measures: `python -m bench.memory_probe JOBS EVERY`.

It runs JOBS no-op jobs through the engine with a one-second retention, so the housekeeper
purges finished jobs as they go. It reads its resident set size and its count of objects the
garbage collector tracks after every EVERY jobs, and prints one JSON line: the readings as
[jobs, bytes, objects] and the seconds the jobs took.

Before each reading the workers finish, the retention passes, the expired jobs are purged and
the garbage is collected. How many records the store holds mid-run depends on when the
housekeeper last ran, so a reading taken mid-run would measure that timing, not a leak.
"""

from __future__ import annotations

import gc
import json
import sys
import time

from bench.common import rss_bytes
from bench.harness import Engine
from bench.noop_jobs import NOOP
from queueing.service import Housekeeper

RETENTION_SECONDS = 1
BATCH = 1000  # jobs submitted before waiting for the workers; the default queue.max_size


def settled_rss(engine: Engine) -> int:
    """Return the RSS once every job so far is finished, past the retention and purged."""
    engine.join()
    time.sleep(RETENTION_SECONDS + 0.05)
    engine.service.purge_expired()
    gc.collect()
    return rss_bytes()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.memory_probe JOBS EVERY", file=sys.stderr)
        return 2
    jobs, every = int(argv[0]), int(argv[1])
    overrides = {"jobs": {"retention_seconds": RETENTION_SECONDS}, "queue": {"max_size": BATCH}}
    with Engine(overrides) as engine:
        # The same purge interval as the service's: a tenth of the retention, at least 1 s.
        housekeeper = Housekeeper(engine.service, interval=max(1.0, RETENTION_SECONDS / 10))
        housekeeper.start()
        readings: list[tuple[int, int, int]] = []
        seconds = 0.0
        done = 0
        while done < jobs:
            started = time.perf_counter()
            count = min(BATCH, jobs - done)
            for _ in range(count):
                engine.submit(NOOP)
            engine.join()
            seconds += time.perf_counter() - started
            done += count
            if done % every == 0 or done == jobs:
                rss = settled_rss(engine)
                readings.append((done, rss, len(gc.get_objects())))
        housekeeper.stop()
    print(json.dumps({"readings": readings, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
