"""Memory of a long run: RSS after the first 100,000 no-op jobs and after 1,000,000.

Each repetition is a fresh `bench.memory_probe` process, so nothing else this runner did
(another benchmark's garbage, for example) is in its figures. The probe also reads its RSS
after every 100,000 jobs, which tells a leak (a steady climb) from the allocator's noise.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from bench.common import REPO_ROOT, row

JOBS = 1_000_000
EVERY = 100_000
PROBE_TIMEOUT = 900.0  # seconds; a run takes about a minute on a 2-core machine
MEBIBYTE = 1024 * 1024


def probe() -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.memory_probe", str(JOBS), str(EVERY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the memory probe failed:\n{completed.stderr[-2000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def slope(readings: list[list[int]]) -> float:
    """Return the least-squares growth of the readings, in MiB per 100,000 jobs."""
    jobs = [reading[0] / EVERY for reading in readings]
    sizes = [reading[1] / MEBIBYTE for reading in readings]
    return statistics.linear_regression(jobs, sizes).slope


def run(quick: bool) -> list[dict[str, Any]]:
    repetitions = 1 if quick else 3
    results = [probe() for _ in range(repetitions)]
    first = [result["readings"][0][1] / MEBIBYTE for result in results]
    last = [result["readings"][-1][1] / MEBIBYTE for result in results]
    every_reading = [reading[1] / MEBIBYTE for result in results for reading in result["readings"]]
    objects = [reading[2] for result in results for reading in result["readings"]]
    slopes = ", ".join(f"{slope(result['readings']):+.2f}" for result in results)
    rate = min(JOBS / result["seconds"] for result in results)
    processes = "One process" if repetitions == 1 else f"{repetitions} processes"
    return [
        row(
            "memory after 1,000,000 no-op jobs",
            "MiB",
            last,
            (
                f"Resident set size of a fresh process after {JOBS:,} no-op jobs through the "
                f"engine, beside the same process after its first {EVERY:,}, with "
                "`jobs.retention_seconds` 1 and the housekeeper purging every second. Jobs "
                f"go in batches of 1,000 (the default `queue.max_size`) at {rate:,.0f} jobs/s "
                "or more. Before each reading the workers finish, the retention passes, the "
                "expired jobs are purged and the garbage is collected. Read after every "
                f"{EVERY:,} jobs, the RSS ranged {min(every_reading):.1f}–"
                f"{max(every_reading):.1f} MiB, and its least-squares trend was {slopes} MiB "
                f"per {EVERY:,} jobs, while the garbage collector tracked {min(objects):,}–"
                f"{max(objects):,} objects. {processes}."
            ),
            reference=f"the same process after {EVERY:,} jobs",
            reference_samples=first,
            min_ratio=1 / 1.1,
            target="≤ 1.10 × the reference (ratio ≥ 0.91×)",
            holds_back=(
                "The count of tracked objects stays flat, so live Python objects do not pile "
                "up. The RSS follows the most records the store held at once, which depends on "
                "when the housekeeper last ran: CPython's allocator keeps the arenas of that "
                "peak, and the records dict keeps a table sized for it."
            ),
        )
    ]
