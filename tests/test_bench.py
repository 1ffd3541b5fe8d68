"""The benchmark runner: rows, ratios, targets, the results page, and the no-op job types."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import bench_thumbnails, runner
from bench.common import alternate, percentile, row
from bench.harness import Engine
from bench.noop_jobs import NOOP, STAMP
from bench.report import InvalidRow, check_row, format_ratio, render_page, summarize
from containers.application import build_container
from queueing.errors import UnknownJobType
from queueing.jobs import JobStatus
from tests.conftest import make_settings

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "photos"


@pytest.fixture
def photos() -> Path:
    assert PHOTOS.is_dir(), f"the shared photos are missing at {PHOTOS}"
    return PHOTOS


# Rows and their statistics ---------------------------------------------------------------------


def test_rate_ratio_is_measured_over_reference() -> None:
    summary = summarize(
        row("r", "jobs/s", [90, 100, 110], "", reference="x", reference_samples=[200, 200, 200])
    )
    assert summary.measured.median == 100
    assert summary.measured.low == 90
    assert summary.measured.high == 110
    assert summary.ratio == pytest.approx(0.5)
    assert not summary.lower_is_better


def test_time_ratio_is_reference_over_measured() -> None:
    summary = summarize(row("t", "µs", [4.0], "", reference="x", reference_samples=[40.0]))
    assert summary.lower_is_better
    assert summary.ratio == pytest.approx(10.0)


def test_lower_is_better_key_wins_over_unit() -> None:
    summary = summarize(
        row("l", "jobs", [2.0], "", reference="x", reference_samples=[1.0], lower_is_better=True)
    )
    assert summary.ratio == pytest.approx(0.5)


def test_pair_ratios_span_each_repetition() -> None:
    summary = summarize(
        row("p", "req/s", [100, 50], "", reference="x", reference_samples=[100, 100])
    )
    assert summary.pair_ratios == (pytest.approx(0.5), pytest.approx(1.0))


def test_missed_ratio_target_says_by_how_much() -> None:
    summary = summarize(
        row("m", "req/s", [80], "", reference="x", reference_samples=[100], min_ratio=0.9)
    )
    assert summary.met is False
    assert summary.target == "≥ 0.90×"
    assert summary.shortfall == "11% below the target ratio"


def test_value_target_compares_the_median() -> None:
    met = summarize(row("v", "µs", [1.0, 4.0, 9.0], "", max_value=5.0))
    missed = summarize(row("v", "µs", [6.0, 7.0, 8.0], "", max_value=5.0))
    assert met.met is True
    assert missed.met is False
    assert missed.shortfall == "1.40 times the 5.00 µs limit"


def test_row_without_target_has_no_verdict() -> None:
    summary = summarize(row("n", "jobs/s", [1.0], ""))
    assert summary.met is None
    assert summary.ratio is None


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"name": "a"}, "missing"),
        (row("a", "jobs/s", [], ""), "non-empty"),
        (row("a", "jobs/s", [True], ""), "numeric"),
        (row("a", "jobs/s", [1.0], "", reference="x"), "without samples"),
        ([1, 2], "must be a dict"),
    ],
)
def test_malformed_rows_are_rejected(broken: Any, message: str) -> None:
    with pytest.raises(InvalidRow, match=message):
        check_row(broken, "bench.bench_test")


def test_ratio_is_written_with_multiplication_sign() -> None:
    assert format_ratio(0.934) == "0.93×"
    assert format_ratio(1234.0) == "1,234×"


def test_percentile_uses_nearest_rank() -> None:
    values = [float(number) for number in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_alternate_rotates_order_and_skips_warm_up() -> None:
    calls: list[str] = []

    def contender(name: str) -> Any:
        def measure() -> float:
            calls.append(name)
            return float(len(calls))

        return measure

    samples = alternate(2, {"a": contender("a"), "b": contender("b")})
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert samples == {"a": [3.0, 6.0], "b": [4.0, 5.0]}


# The page --------------------------------------------------------------------------------------


def test_page_lists_command_machine_rows_and_failures() -> None:
    summaries = [
        summarize(
            row(
                "HTTP accept",
                "req/s",
                [93.0],
                "what was measured",
                reference="bare route",
                reference_samples=[100.0],
                min_ratio=0.9,
            )
        ),
        summarize(
            row(
                "latency",
                "µs",
                [120.0],
                "one at a time",
                reference="bare",
                reference_samples=[60.0],
                max_value=100.0,
                holds_back="the thread switch",
            )
        ),
    ]
    page = render_page(
        command="make bench-quick",
        quick=True,
        started=datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC),
        seconds=95.0,
        machine=[("CPU", "Test CPU"), ("Python", "CPython 3.11.7")],
        summaries=summaries,
        failures=[("bench.bench_sqlite", "ImportError: no module")],
    )
    assert "`make bench-quick`" in page
    assert "2026-01-02 03:04 UTC" in page
    assert "| CPU | Test CPU |" in page
    assert "| HTTP accept | req/s (higher is better) | 93.0 (1 run) | bare route |" in page
    assert "0.93×" in page
    assert "| met |" in page
    assert "missed: 1.20 times the 100 µs limit" in page
    assert "the thread switch" in page
    assert "`bench.bench_sqlite`: ImportError: no module" in page


# The runner ------------------------------------------------------------------------------------


def test_discover_finds_every_benchmark_module() -> None:
    names = runner.discover()
    assert {"bench.bench_engine", "bench.bench_http", "bench.bench_scope"} <= set(names)
    assert all(name.startswith("bench.bench_") for name in names)
    assert runner.discover(["scope"]) == ["bench.bench_scope"]


def test_run_module_checks_every_row() -> None:
    module = ModuleType("bench.bench_broken")
    module.run = lambda quick: [row("ok", "jobs/s", [1.0], ""), {"name": "broken"}]  # type: ignore[attr-defined]
    with pytest.raises(InvalidRow, match="broken"):
        runner.run_module(module, quick=True)


def test_runner_writes_the_page_for_selected_modules(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    assert runner.main(["--quick", "--only", "scope", "--output", str(output)]) == 0
    page = output.read_text(encoding="utf-8")
    assert "scope per job, no per-job resource" in page
    assert "new DeclarativeContainer per job" in page
    assert "## Machine" in page


# The benchmark job types -----------------------------------------------------------------------


def test_noop_job_types_are_not_enabled_by_default(tmp_path: Path) -> None:
    registry = build_container(make_settings(tmp_path)).registry()
    with pytest.raises(UnknownJobType):
        registry.get(NOOP)


def test_noop_and_stamp_jobs_run_through_the_engine() -> None:
    with Engine({"workers": {"threads": 2}}) as engine:
        noop = engine.submit(NOOP)
        stamp = engine.submit(STAMP)
        engine.join()
        noop_done = engine.service.store.get(noop.id)
        stamp_done = engine.service.store.get(stamp.id)
    assert noop_done.status is JobStatus.SUCCEEDED
    assert stamp_done.status is JobStatus.SUCCEEDED
    assert stamp_done.result is not None
    assert stamp_done.result["started"] > 0


def test_engine_thumbnails_match_the_plain_loop(photos: Path) -> None:
    files = sorted(photos.glob("*.jpg"))[:3]
    sample = {path.name: path.read_bytes() for path in files}
    _, engine_outputs = bench_thumbnails.engine_run(sample, rounds=1)
    _, plain_outputs = bench_thumbnails.plain_loop(sample, rounds=1)
    lowest = bench_thumbnails.compare(engine_outputs, plain_outputs)
    assert set(lowest) == set(bench_thumbnails.SIZES)
    assert min(lowest.values()) >= bench_thumbnails.MIN_PSNR
