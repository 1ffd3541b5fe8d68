"""The benchmark runner: finds every `bench/bench_*.py` module, runs it, writes the page.

A module has `run(quick: bool) -> list[dict]`, returning rows of the form `bench.report`
describes, and may have `preflight()`, which checks or installs what it needs before anything
is measured (it raises with the command to run when it cannot).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import pkgutil
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import REPO_ROOT
from bench.report import (
    InvalidRow,
    Summary,
    check_row,
    format_ratio,
    format_spread,
    machine_facts,
    render_page,
    summarize,
)

BENCH_DIR = Path(__file__).resolve().parent
PREFIX = "bench_"


def discover(only: Sequence[str] = ()) -> list[str]:
    """Return the names of the benchmark modules, sorted; `only` keeps names containing one."""
    names = sorted(
        f"bench.{info.name}"
        for info in pkgutil.iter_modules([str(BENCH_DIR)])
        if info.name.startswith(PREFIX)
    )
    if only:
        names = [name for name in names if any(part in name for part in only)]
    return names


def run_module(module: ModuleType, quick: bool) -> list[Mapping[str, Any]]:
    """Run one module and return its rows, checked; raise InvalidRow for a malformed one."""
    rows = module.run(quick)
    if not isinstance(rows, list):
        raise InvalidRow(f"{module.__name__}.run returned {type(rows).__name__}, not a list")
    return [check_row(row, module.__name__) for row in rows]


def _command(argv: Sequence[str], quick: bool) -> str:
    if "MAKELEVEL" in os.environ:
        return "make bench-quick" if quick else "make bench"
    return " ".join(["python -m bench", *argv])


def _progress(summary: Summary) -> str:
    text = f"  {summary.name}: {format_spread(summary.measured)} {summary.unit}"
    if summary.ratio is not None:
        text += f", {format_ratio(summary.ratio)} of {summary.reference}"
    if summary.met is False:
        text += f" (target {summary.target} missed: {summary.shortfall})"
    return text


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run Backburner's benchmarks; write BENCHMARKS.md."
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer and shorter repetitions (about two minutes)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only the modules whose name contains NAME (repeatable), e.g. --only engine",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "BENCHMARKS.md",
        help="where to write the results page (default: BENCHMARKS.md at the repository root)",
    )
    args = parser.parse_args(argv)

    names = discover(args.only)
    if not names:
        print(f"no benchmark module matches {args.only}", file=sys.stderr)
        return 2
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.perf_counter()
    failures: list[tuple[str, str]] = []
    modules: list[ModuleType] = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as error:  # noqa: BLE001 - a broken module is reported, not fatal
            failures.append((name, f"import failed: {type(error).__name__}: {error}"))
    for module in modules:
        preflight = getattr(module, "preflight", None)
        if preflight is not None:
            try:
                preflight()
            except Exception as error:  # noqa: BLE001 - stop with the module's own message
                print(f"{module.__name__}: {error}", file=sys.stderr)
                return 2

    summaries: list[Summary] = []
    for module in modules:
        print(f"{module.__name__} ...", flush=True)
        module_started = time.perf_counter()
        try:
            rows = run_module(module, args.quick)
            module_summaries = [summarize(row) for row in rows]
        except Exception as error:  # noqa: BLE001 - one failing module must not lose the others
            traceback.print_exc()
            failures.append((module.__name__, f"{type(error).__name__}: {error}"))
            continue
        summaries.extend(module_summaries)
        for summary in module_summaries:
            print(_progress(summary), flush=True)
        print(f"  ({time.perf_counter() - module_started:.0f} s)", flush=True)

    page = render_page(
        command=_command(argv, args.quick),
        quick=args.quick,
        started=started_at,
        seconds=time.perf_counter() - started,
        machine=machine_facts(),
        summaries=summaries,
        failures=failures,
    )
    args.output.write_text(page, encoding="utf-8")
    print(f"Wrote {args.output} ({len(summaries)} rows, {len(failures)} failures).")
    return 1 if failures else 0
