"""Benchmark rows: their check, their statistics and the `BENCHMARKS.md` page written from them.

A row is a plain dict, the same for every `bench/bench_*.py` module:

    {"name": str, "unit": str, "samples": [float, ...],
     "reference": str | None, "reference_samples": [float, ...] | None, "note": str}

with these optional keys:

- `lower_is_better` (bool): times, latencies and sizes. Without it the unit decides (see
  `LOWER_IS_BETTER_UNITS`); any other unit is a rate, where higher is better.
- `min_ratio` (float): the target, as the lowest acceptable ratio to the reference.
- `max_value` (float): the target, as the highest acceptable median in the row's own unit.
- `target` (str): how to show the target, when the generated text would not say it well.
- `holds_back` (str): what keeps the figure from its target; shown only when it is missed.

The ratio is measured / reference for rates and reference / measured where lower is better,
so a ratio above 1 always means Backburner did better than its reference.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOWER_IS_BETTER_UNITS = frozenset({"ns", "µs", "us", "ms", "s", "B", "KiB", "MiB", "GiB"})
LIBRARIES = ("flask", "werkzeug", "waitress", "dependency-injector", "pillow", "huey", "pyyaml")
REQUIRED_KEYS = ("name", "unit", "samples", "reference", "reference_samples", "note")


class InvalidRow(ValueError):
    """Raised when a benchmark module returns a row that does not have the agreed form."""


@dataclass(frozen=True)
class Spread:
    """Median and range of one list of samples."""

    count: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(len(samples), statistics.median(samples), min(samples), max(samples))


@dataclass(frozen=True)
class Summary:
    """One row of the results table, with its statistics worked out."""

    name: str
    unit: str
    lower_is_better: bool
    measured: Spread
    reference: str | None
    reference_spread: Spread | None
    ratio: float | None  # of the medians; above 1 means Backburner did better
    pair_ratios: tuple[float, float] | None  # range of the per-repetition ratios
    target: str | None
    met: bool | None  # None when the row has no target
    shortfall: str | None  # how far a missed target was missed
    note: str
    holds_back: str | None


def check_row(row: Any, source: str) -> Mapping[str, Any]:
    """Return `row` if it has the agreed form; raise InvalidRow naming what is wrong."""
    if not isinstance(row, Mapping):
        raise InvalidRow(f"{source}: a row must be a dict, got {type(row).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise InvalidRow(f"{source}: row {row.get('name')!r} is missing {', '.join(missing)}")
    name = row["name"]
    if not _numbers(row["samples"]) or not row["samples"]:
        raise InvalidRow(f"{source}: row {name!r} needs a non-empty list of numeric samples")
    if row["reference"] is not None and (
        not _numbers(row["reference_samples"]) or not row["reference_samples"]
    ):
        raise InvalidRow(
            f"{source}: row {name!r} names reference {row['reference']!r} without samples"
        )
    return row


def _numbers(values: Any) -> bool:
    return isinstance(values, list | tuple) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in values
    )


def summarize(row: Mapping[str, Any]) -> Summary:
    """Work out the medians, ranges, ratio and target verdict of a checked row."""
    unit = str(row["unit"])
    lower = bool(row.get("lower_is_better", unit in LOWER_IS_BETTER_UNITS))
    measured = Spread.of(row["samples"])
    reference_spread: Spread | None = None
    ratio: float | None = None
    pair_ratios: tuple[float, float] | None = None
    if row["reference"] is not None:
        reference_samples = row["reference_samples"]
        reference_spread = Spread.of(reference_samples)
        ratio = _ratio(measured.median, reference_spread.median, lower)
        if len(reference_samples) == len(row["samples"]):
            pairs = [
                _ratio(value, reference, lower)
                for value, reference in zip(row["samples"], reference_samples, strict=True)
            ]
            pair_ratios = (min(pairs), max(pairs))

    target, met, shortfall = _verdict(row, measured, ratio, unit)
    return Summary(
        name=str(row["name"]),
        unit=unit,
        lower_is_better=lower,
        measured=measured,
        reference=row["reference"],
        reference_spread=reference_spread,
        ratio=ratio,
        pair_ratios=pair_ratios,
        target=target,
        met=met,
        shortfall=shortfall,
        note=str(row["note"]),
        holds_back=row.get("holds_back"),
    )


def _ratio(measured: float, reference: float, lower_is_better: bool) -> float:
    numerator, denominator = (reference, measured) if lower_is_better else (measured, reference)
    if denominator == 0:
        return float("inf") if numerator > 0 else 1.0
    return numerator / denominator


def _verdict(
    row: Mapping[str, Any], measured: Spread, ratio: float | None, unit: str
) -> tuple[str | None, bool | None, str | None]:
    """Return the target's text, whether it was met, and by how much it was missed."""
    texts: list[str] = []
    met: bool | None = None
    shortfalls: list[str] = []
    min_ratio = row.get("min_ratio")
    if min_ratio is not None:
        texts.append(f"≥ {format_ratio(min_ratio)}")
        if ratio is None:
            raise InvalidRow(f"row {row['name']!r} has a ratio target but no reference")
        ok = ratio >= min_ratio
        met = ok if met is None else met and ok
        if not ok:
            shortfalls.append(f"{(1 - ratio / min_ratio) * 100:.0f}% below the target ratio")
    max_value = row.get("max_value")
    if max_value is not None:
        texts.append(f"≤ {format_value(max_value)} {unit}")
        ok = measured.median <= max_value
        met = ok if met is None else met and ok
        if not ok:
            over = measured.median / max_value
            shortfalls.append(f"{over:.2f} times the {format_value(max_value)} {unit} limit")
    target = row.get("target") or (" and ".join(texts) if texts else None)
    return target, met, "; ".join(shortfalls) or None


# Formatting ------------------------------------------------------------------------------------


def format_value(value: float) -> str:
    """Format a figure with three significant digits, without exponent notation."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio < 100 else f"{ratio:,.0f}×"


def format_spread(spread: Spread) -> str:
    if spread.count == 1:
        return f"{format_value(spread.median)} (1 run)"
    return (
        f"{format_value(spread.median)} "
        f"({format_value(spread.low)}–{format_value(spread.high)}, n={spread.count})"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        "| measurement | unit | Backburner: median (min–max) | reference | "
        "reference: median (min–max) | ratio (per-run range) | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        better = "lower is better" if summary.lower_is_better else "higher is better"
        reference = summary.reference or "—"
        reference_figure = (
            format_spread(summary.reference_spread) if summary.reference_spread else "—"
        )
        ratio = "—"
        if summary.ratio is not None:
            ratio = format_ratio(summary.ratio)
            if summary.pair_ratios is not None:
                low, high = summary.pair_ratios
                ratio += f" ({format_ratio(low)}–{format_ratio(high)})"
        if summary.met is None:
            verdict = "—"
        elif summary.met:
            verdict = "met"
        else:
            verdict = f"missed: {summary.shortfall}"
        cells = [
            summary.name,
            f"{summary.unit} ({better})",
            format_spread(summary.measured),
            reference,
            reference_figure,
            ratio,
            summary.target or "—",
            verdict,
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


# The machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def wrk_version() -> str:
    try:
        completed = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def machine_facts() -> list[tuple[str, str]]:
    """Return what the figures depend on: CPU, cores, OS, Python and library versions."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} logical CPUs"
    if usable is not None and usable != os.cpu_count():
        cores += f", {usable} usable by this process"
    versions = []
    for library in LIBRARIES:
        try:
            versions.append(f"{library} {importlib.metadata.version(library)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{library} (not installed)")
    return [
        ("CPU", cpu_model()),
        ("cores", cores),
        ("memory", _memory_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("libraries", ", ".join(versions)),
        ("load generator", wrk_version()),
    ]


def _memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


# The page --------------------------------------------------------------------------------------


def render_page(
    *,
    command: str,
    quick: bool,
    started: datetime.datetime,
    seconds: float,
    machine: Sequence[tuple[str, str]],
    summaries: Sequence[Summary],
    failures: Sequence[tuple[str, str]],
) -> str:
    """Return the Markdown of `BENCHMARKS.md`."""
    mode = "quick run (fewer and shorter repetitions)" if quick else "full run"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` ({mode}) on {started:%Y-%m-%d %H:%M} UTC in {seconds:.0f} s. "
        "The runner rewrites this page on every run; edit `bench/` instead.",
        "",
        "How to read it:",
        "",
        "- Each figure is the median of the repetitions of one run, with their minimum and "
        "maximum in brackets (`n` repetitions).",
        "- Each measurement and its reference ran on the same machine in the same run, "
        "taking turns repetition by repetition, so a change in the machine's load hits both. "
        "These machines are shared and their CPUs vary: compare ratios, not absolute figures "
        "from different runs.",
        "- The ratio is Backburner / reference for rates, and reference / Backburner for "
        "times and sizes, so above 1× always means Backburner did better. It is the ratio of "
        "the medians; the range after it is that of the ratios of each repetition's pair.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines.extend(f"| {_cell(key)} | {_cell(value)} |" for key, value in machine)
    lines += ["", "## Results", "", *results_table(summaries), "", "## Notes", ""]
    for summary in summaries:
        text = summary.note
        if summary.met is False and summary.holds_back:
            text += f" **Target missed ({summary.shortfall}).** {summary.holds_back}"
        lines.append(f"- **{summary.name}**: {text}")
    if failures:
        lines += ["", "## Benchmarks that failed", ""]
        lines.extend(f"- `{source}`: {_cell(error)}" for source, error in failures)
    lines.append("")
    return "\n".join(lines)
