"""Helpers the benchmark modules share: taking turns, building rows, settings and paths."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from containers.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BACKBURNER_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
PHOTOS = SHARED_DATA / "images" / "photos"
NOOP_MODULE = "bench.noop_jobs"


def alternate(
    repetitions: int, contenders: Mapping[str, Callable[[], float]], *, warm_up: bool = True
) -> dict[str, list[float]]:
    """Run each contender once per repetition, taking turns, and collect what each returns.

    The order rotates by one place every repetition, so neither contender always runs first
    (right after the other one's garbage, say). A load change on the machine hits every
    contender in the repetitions it lasts. With `warm_up`, each runs once untimed first.
    """
    names = list(contenders)
    if warm_up:
        for name in names:
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            # Collect the previous contender's garbage now, not during the next one's timing.
            gc.collect()
            samples[name].append(contenders[name]())
    return samples


def row(
    name: str,
    unit: str,
    samples: list[float],
    note: str,
    *,
    reference: str | None = None,
    reference_samples: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a row of the form `bench.report` describes; `extra` holds its optional keys."""
    return {
        "name": name,
        "unit": unit,
        "samples": list(samples),
        "reference": reference,
        "reference_samples": list(reference_samples) if reference_samples is not None else None,
        "note": note,
        **extra,
    }


def settings_for(data_dir: Path, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Checked settings with every file under `data_dir` and the no-op job type loaded."""
    merged: dict[str, dict[str, Any]] = {
        "server": {"port": 0},
        "storage": {"data_dir": str(data_dir / "var")},
        "csv": {"summary_db": str(data_dir / "csv-summaries.sqlite3")},
        "queue": {"sqlite_path": str(data_dir / "backburner.sqlite3")},
        "handlers": {"modules": [NOOP_MODULE]},
        "shutdown": {"grace_seconds": 5},
    }
    for section, keys in overrides.items():
        merged.setdefault(section, {}).update(keys)
    return load_settings(environ={}, overrides=merged)


def rss_bytes() -> int:
    """Return the resident set size of this process now (Linux: from /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the value at `fraction` (0 to 1) of sorted values, by the nearest-rank method."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
