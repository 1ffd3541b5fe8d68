"""The `csv-profile` job type: request parsing, the profile, the summary table, limits."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.csv_encoding import SAMPLE_BYTES
from handlers.csv_profile import (
    JOB_TYPE,
    SUMMARY_RESOURCE,
    CsvProfileRequested,
    MissingProfile,
    parse_csv_request,
    profile_columns,
    register,
    store_summary,
)
from handlers.csv_reading import MAX_LISTED_PROBLEMS, detect_delimiter
from handlers.csv_stats import ColumnStats
from handlers.registry import Intake, Registry, Submission, UploadedFile
from queueing.context import CancelToken, JobContext
from queueing.errors import InvalidInput, JobInterrupted
from queueing.jobs import JobStatus, new_job_id
from queueing.local_files import LocalFileStore
from queueing.publisher import publish
from tests.support import SHARED_DATA

DATA_DIR = SHARED_DATA
RAGGED_KINDS = ("short_row", "long_row")


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    register(registry)
    registry.freeze()
    return registry


class FactoryScope:
    """A per-job scope for tests: opens resources from their factories, closes them in reverse."""

    def __init__(self, registry: Registry, settings: Mapping[str, Any]) -> None:
        self._factories = registry.resources
        self._settings = settings
        self._open: dict[str, Any] = {}
        self._generators: list[Iterator[Any]] = []

    def resource(self, name: str) -> Any:
        if name not in self._open:
            generator = self._factories[name](self._settings)
            self._open[name] = next(generator)
            self._generators.append(generator)
        return self._open[name]

    def run(self, function: Callable[[], Any]) -> Any:
        return function()

    def close(self) -> None:
        # Run each generator past its yield, as the real scope's resource providers do.
        while self._generators:
            next(self._generators.pop(), None)
        self._open.clear()


class CsvJobs:
    """Submits CSV input through `parse_csv_request` and runs the handlers on a real context."""

    def __init__(self, tmp_path: Path, registry: Registry) -> None:
        self.files = LocalFileStore(tmp_path / "files")
        self.registry = registry
        self.summary_db = tmp_path / "summaries" / "csv.sqlite3"
        self.settings: dict[str, Any] = {
            "csv": {
                "max_rows": 10_000_000,
                "max_columns": 1000,
                "max_field_bytes": 1_048_576,
                "summary_db": str(self.summary_db),
            }
        }
        self.reports: list[tuple[float, float | None, str | None]] = []

    def limit(self, **values: int) -> None:
        self.settings["csv"].update(values)

    def submit_file(self, data: bytes, **parts: bytes) -> CsvProfileRequested:
        files = {"file": UploadedFile("file", "input.csv", io.BytesIO(data))}
        files.update({name: UploadedFile(name, name, io.BytesIO(b)) for name, b in parts.items()})
        return self.parse(Submission(content="multipart", files=files))

    def submit_json(self, body: Mapping[str, Any]) -> CsvProfileRequested:
        return self.parse(Submission(content="json", json=body))

    def parse(self, submission: Submission) -> CsvProfileRequested:
        intake = Intake(job_id=new_job_id(time.time()), settings=self.settings, files=self.files)
        return parse_csv_request(submission, intake)

    def context(
        self,
        notification: CsvProfileRequested,
        *,
        scope: FactoryScope | None = None,
        cancel_token: CancelToken | None = None,
        report: Callable[[float, float | None, str | None], None] | None = None,
        result_so_far: Mapping[str, Any] | None = None,
    ) -> JobContext:
        return JobContext(
            job_id=notification.job_id,
            job_type=JOB_TYPE,
            attempt=1,
            settings=self.settings,
            files=self.files,
            cancel_token=cancel_token or CancelToken(),
            scope=scope or FactoryScope(self.registry, self.settings),
            report=report or self.record_report,
            result_so_far=result_so_far,
        )

    def record_report(self, done: float, total: float | None, message: str | None) -> None:
        self.reports.append((done, total, message))

    def profile(self, data: bytes) -> dict[str, Any]:
        notification = self.submit_file(data)
        return profile_columns(notification, self.context(notification))


@pytest.fixture
def jobs(tmp_path: Path, registry: Registry) -> CsvJobs:
    return CsvJobs(tmp_path, registry)


def column(profile: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in profile["columns"] if c["name"] == name)


def kinds(profile: Mapping[str, Any]) -> list[tuple[int, str]]:
    return [(problem["line"], problem["kind"]) for problem in profile["problems"]]


def numbered_rows(count: int) -> bytes:
    lines = ["id,name,score"] + [f"{i},name {i},{i % 97}.5" for i in range(count)]
    return ("\n".join(lines) + "\n").encode("ascii")


# Real files ------------------------------------------------------------------------------------

# Listed by name, so a missing data folder fails these tests instead of leaving none to run.
SPECTRUM = (
    "comma_in_quotes",
    "empty",
    "empty_crlf",
    "escaped_quotes",
    "json",
    "newlines",
    "newlines_crlf",
    "quotes_and_newlines",
    "simple",
    "simple_crlf",
    "utf8",
)
MESSY = (
    "inventory.tsv",
    "ledger_pipe.csv",
    "ragged.csv",
    "sales_cp1252_semicolon.csv",
    "survey_utf8_bom.csv",
)


@pytest.mark.parametrize("name", SPECTRUM)
def test_spectrum_file_matches_json_twin(jobs: CsvJobs, data_dir: Path, name: str) -> None:
    spectrum = data_dir / "csv" / "spectrum"
    expected = json.loads((spectrum / "json" / f"{name}.json").read_text("utf-8"))

    profile = jobs.profile((spectrum / "csvs" / f"{name}.csv").read_bytes())

    assert profile["rows"] == len(expected)
    assert [c["name"] for c in profile["columns"]] == list(expected[0])
    assert profile["problems"] == []
    for entry in profile["columns"]:
        assert entry["count"] + entry["nulls"] == len(expected)


def test_spectrum_files_are_all_checked() -> None:
    assert len(SPECTRUM) == 11


@pytest.mark.parametrize("name", MESSY)
def test_messy_file_matches_expected(jobs: CsvJobs, data_dir: Path, name: str) -> None:
    messy = data_dir / "csv" / "messy"
    expected = json.loads((messy / "expected.json").read_text("utf-8"))[name]

    profile = jobs.profile((messy / name).read_bytes())

    # "utf-8 (plain ASCII, so 'ascii' is also right)" names utf-8 first.
    assert profile["encoding"] == expected["encoding"].split()[0]
    assert profile["delimiter"] == expected["delimiter"]
    assert profile["rows"] == expected["rows"]
    assert [c["name"] for c in profile["columns"]] == expected["columns"]
    for name_, mean in expected["numeric_means"].items():
        assert column(profile, name_)["mean"] == pytest.approx(mean, rel=1e-6)
    for entry in profile["columns"]:
        assert entry["nulls"] == expected["nulls"].get(entry["name"], 0), entry["name"]
    if "problems" in expected:
        ragged = [p for p in profile["problems"] if p["kind"] in RAGGED_KINDS]
        assert len(ragged) == expected["problems"]


def test_messy_expectations_are_all_checked(data_dir: Path) -> None:
    expected = json.loads((data_dir / "csv" / "messy" / "expected.json").read_text("utf-8"))
    assert sorted(name for name in expected if not name.startswith("_")) == sorted(MESSY)


def test_ragged_problems_name_lines(jobs: CsvJobs, data_dir: Path) -> None:
    profile = jobs.profile((data_dir / "csv" / "messy" / "ragged.csv").read_bytes())

    assert kinds(profile) == [(3, "short_row"), (4, "blank_line"), (5, "long_row")]
    assert column(profile, "temp")["max"] == 31.0
    assert column(profile, "city")["count"] == 4


def test_ledger_dates_and_accounts(jobs: CsvJobs, data_dir: Path) -> None:
    profile = jobs.profile((data_dir / "csv" / "messy" / "ledger_pipe.csv").read_bytes())

    assert column(profile, "date")["type"] == "date"
    account = column(profile, "account")
    assert account["distinct"] == 3
    assert account["distinct_capped"] is False
    assert account["top_values"][0] == {"value": "food", "count": 2}
    amount = column(profile, "amount")
    assert amount["type"] == "float"
    assert amount["min"] == -1200.0
    assert amount["max"] == 3400.5


def test_decimal_commas_read_with_semicolons(jobs: CsvJobs, data_dir: Path) -> None:
    data = (data_dir / "csv" / "messy" / "sales_cp1252_semicolon.csv").read_bytes()

    price = column(jobs.profile(data), "Preis €")

    assert price["type"] == "float"
    assert price["min"] == 0.45
    assert price["max"] == 12.8


def test_bom_file_keeps_quoted_newline(jobs: CsvJobs, data_dir: Path) -> None:
    profile = jobs.profile((data_dir / "csv" / "messy" / "survey_utf8_bom.csv").read_bytes())

    answers = [entry["value"] for entry in column(profile, "answer")["top_values"]]
    assert "First line\r\nsecond line" in answers
    assert 'Said "maybe"' in answers


# Types and statistics --------------------------------------------------------------------------


def test_column_types_are_inferred(jobs: CsvJobs) -> None:
    data = (
        b"flag,whole,real,day,moment,mixed_time,code,text,nothing\n"
        b"true,1,1.5,2026-01-03,2026-01-03T10:00:00Z,2026-01-03,007,a,\n"
        b"No,-2,2,2026-02-28,2026-01-03 10:00,2026-01-04T08:30,012,b,\n"
        b"yes,30,1e3,2024-02-29,2026-01-03T10:00:00.5+01:00,2026-01-05,120,c,\n"
    )

    profile = jobs.profile(data)

    types = {entry["name"]: entry["type"] for entry in profile["columns"]}
    assert types == {
        "flag": "boolean",
        "whole": "integer",
        "real": "float",
        "day": "date",
        "moment": "datetime",
        "mixed_time": "datetime",
        "code": "string",
        "text": "string",
        "nothing": "empty",
    }


def test_integer_column_statistics(jobs: CsvJobs, data_dir: Path) -> None:
    profile = jobs.profile((data_dir / "csv" / "messy" / "inventory.tsv").read_bytes())

    qty = column(profile, "qty")
    assert qty["type"] == "integer"
    assert qty["min"] == 0
    assert qty["max"] == 250
    assert qty["count"] == 3
    assert qty["distinct"] == 3


def test_number_keys_only_for_numbers(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"name,score\nann,1\nbob,2\n")

    assert "mean" not in column(profile, "name")
    assert column(profile, "score")["mean"] == 1.5


def test_impossible_dates_are_strings(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"day\n2026-02-30\n2026-01-01\n")

    assert column(profile, "day")["type"] == "string"


def test_inf_and_nan_are_not_numbers(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"a,b,c\n1,inf,1e400\n2,nan,3\n")

    assert column(profile, "a")["type"] == "integer"
    assert column(profile, "b")["type"] == "string"
    assert column(profile, "c")["type"] == "string"


def test_huge_integers_become_floats(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"n\n1\n99999999999999999999\n")

    n = column(profile, "n")
    assert n["type"] == "float"
    assert n["max"] == pytest.approx(1e20)


def test_decimal_comma_ignored_with_commas(jobs: CsvJobs) -> None:
    profile = jobs.profile(b'name,price\ntea,"3,50"\ncake,"1,20"\n')

    assert column(profile, "price")["type"] == "string"


def test_grouped_decimal_comma_with_semicolons(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"name;price\ncar;1.234,50\nbike;250,00\nlamp;3.5\n")

    price = column(profile, "price")
    assert price["type"] == "float"
    assert price["max"] == 1234.5
    assert price["mean"] == pytest.approx((1234.5 + 250 + 3.5) / 3, rel=1e-12)


def test_whitespace_cells_are_nulls(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"a,b\n  ,1\n x ,2\n")

    a = column(profile, "a")
    assert a["nulls"] == 1
    assert a["top_values"] == [{"value": "x", "count": 1}]


def test_top_values_by_count(jobs: CsvJobs) -> None:
    cells = ["b", "a", "c", "a", "d", "a", "b", "e", "f", "g"]
    profile = jobs.profile(("v\n" + "\n".join(cells) + "\n").encode())

    top = column(profile, "v")["top_values"]
    assert top == [
        {"value": "a", "count": 3},
        {"value": "b", "count": 2},
        {"value": "c", "count": 1},
        {"value": "d", "count": 1},
        {"value": "e", "count": 1},
    ]


def test_distinct_stops_at_cap() -> None:
    stats = ColumnStats("v", cap=3, decimal_comma=False)
    for cell in ["a", "b", "c", "d", "a", "e", "a"]:
        stats.add(cell)

    result = stats.to_result()

    assert result["distinct"] == 3
    assert result["distinct_capped"] is True
    assert result["count"] == 7
    assert result["top_values"][0] == {"value": "a", "count": 3}
    assert {entry["value"] for entry in result["top_values"]} == {"a", "b", "c"}


def test_long_values_counted_exactly() -> None:
    stats = ColumnStats("v", cap=10, decimal_comma=False)
    first = "x" * 200 + "1"
    second = "x" * 200 + "2"
    for cell in [first, second, first]:
        stats.add(cell)

    result = stats.to_result()

    assert result["distinct"] == 2
    assert result["top_values"][0]["count"] == 2
    assert result["top_values"][0]["value"].endswith("…")
    assert len(result["top_values"][0]["value"]) < 100


# Delimiter, encoding and layout ----------------------------------------------------------------


def test_sniffer_failure_uses_field_counts() -> None:
    text = "id;city;temp\n1;Oslo;-3,5\n2;Lima\n\n3;Cairo;31,0;extra\n4;Perth;22,5\n"
    with pytest.raises(csv.Error):
        csv.Sniffer().sniff(text, delimiters=",;\t|")

    assert detect_delimiter(text, complete=True) == ";"


def test_single_column_falls_back_to_comma() -> None:
    assert detect_delimiter("name\nann\nbob\n", complete=True) == ","


def test_spaces_are_never_the_delimiter() -> None:
    assert detect_delimiter("first name,last name\nAnn Lee,Bo Park\n", complete=True) == ","


def test_cut_sample_ignores_partial_line() -> None:
    text = "a|b|c\n1|2|3\n4|5|6\n7,8,9,10,11,12,13,14"

    assert detect_delimiter(text, complete=False) == "|"


def test_cr_only_line_endings(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"a,b\r1,2\r3,4\r")

    assert profile["rows"] == 2
    assert column(profile, "b")["mean"] == 3.0


def test_cp1252_after_sample_decides_encoding(jobs: CsvJobs) -> None:
    padding = b"".join(b"plain,%d\n" % i for i in range(SAMPLE_BYTES // 8))
    assert len(padding) > SAMPLE_BYTES
    data = b"name,n\n" + padding + "Café,1\n".encode("cp1252")

    profile = jobs.profile(data)

    assert profile["encoding"] == "cp1252"
    assert profile["rows"] == SAMPLE_BYTES // 8 + 1
    assert column(profile, "name")["top_values"][1] == {"value": "Café", "count": 1}


def test_nul_after_sample_fails_job(jobs: CsvJobs) -> None:
    data = b"a\n" + b"x\n" * SAMPLE_BYTES + b"\x00\n"
    notification = jobs.submit_file(data)

    with pytest.raises(InvalidInput) as raised:
        profile_columns(notification, jobs.context(notification))

    assert raised.value.field == "file"
    assert "NUL byte" in raised.value.message


def test_blank_lines_and_header_names_reported(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"\na,,a\n1,2,3\n\n")

    assert profile["rows"] == 1
    assert kinds(profile) == [
        (1, "blank_line"),
        (2, "empty_column_name"),
        (2, "duplicate_column_name"),
        (4, "blank_line"),
    ]


def test_header_only_gives_empty_columns(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"a,b\n")

    assert profile["rows"] == 0
    assert [entry["type"] for entry in profile["columns"]] == ["empty", "empty"]
    assert column(profile, "a")["top_values"] == []


def test_unclosed_quote_is_reported(jobs: CsvJobs) -> None:
    profile = jobs.profile(b'a,b\n1,2\n3,"never closed\n5,6\n')

    assert profile["rows"] == 2
    assert kinds(profile) == [(3, "unclosed_quote")]


def test_stray_quote_is_reported(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"name,height\nann,5'11\"\nbob,6'0\"\n")

    assert profile["rows"] == 2
    assert kinds(profile) == [(2, "stray_quote"), (3, "stray_quote")]
    assert column(profile, "height")["top_values"][0]["value"] == "5'11\""


def test_problem_list_is_capped(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"a,b\n" + b"1\n" * (MAX_LISTED_PROBLEMS + 5))

    problems = profile["problems"]
    assert len(problems) == MAX_LISTED_PROBLEMS + 1
    assert problems[-1]["kind"] == "too_many_problems"
    assert problems[-1]["line"] == MAX_LISTED_PROBLEMS + 2
    assert "5 more problems" in problems[-1]["message"]
    assert profile["rows"] == MAX_LISTED_PROBLEMS + 5


# Limits ----------------------------------------------------------------------------------------


def test_rows_at_limit_pass(jobs: CsvJobs) -> None:
    jobs.limit(max_rows=3)

    assert jobs.profile(b"a\n1\n2\n3\n")["rows"] == 3


def test_rows_over_limit_raise(jobs: CsvJobs) -> None:
    jobs.limit(max_rows=3)

    with pytest.raises(InvalidInput) as raised:
        jobs.profile(b"a\n1\n2\n3\n4\n")

    assert raised.value.field == "file"
    assert "more than 3 rows" in raised.value.message
    assert "csv.max_rows" in raised.value.message


def test_header_over_column_limit_raises(jobs: CsvJobs) -> None:
    jobs.limit(max_columns=2)

    with pytest.raises(InvalidInput) as raised:
        jobs.profile(b"a,b,c\n1,2,3\n")

    assert raised.value.field == "file"
    assert "csv.max_columns" in raised.value.message


def test_long_row_over_column_limit_raises(jobs: CsvJobs) -> None:
    jobs.limit(max_columns=3)

    with pytest.raises(InvalidInput) as raised:
        jobs.profile(b"a,b\n1,2\n1,2,3,4\n")

    assert "line 3" in raised.value.message
    assert "4 fields" in raised.value.message


def test_field_limit_counts_bytes(jobs: CsvJobs) -> None:
    jobs.limit(max_field_bytes=10)

    assert jobs.profile("a\néééée\n".encode())["rows"] == 1
    with pytest.raises(InvalidInput) as raised:
        jobs.profile("a\nééééé1\n".encode())

    assert "field 1 of the record starting on line 2" in raised.value.message
    assert "10 bytes" in raised.value.message


def test_field_limit_counts_cp1252_bytes(jobs: CsvJobs) -> None:
    jobs.limit(max_field_bytes=5)

    assert jobs.profile("a\nCafé!\n".encode("cp1252"))["rows"] == 1
    with pytest.raises(InvalidInput):
        jobs.profile("a\nCafé!!\n".encode("cp1252"))


def test_huge_unclosed_field_raises(jobs: CsvJobs) -> None:
    jobs.limit(max_field_bytes=100_000)

    with pytest.raises(InvalidInput) as raised:
        jobs.profile(b'a,b\n1,"' + b"x" * 4_000_000 + b"\n")

    assert raised.value.field == "file"
    assert "line 2" in raised.value.message


def test_json_limit_names_csv_field(jobs: CsvJobs) -> None:
    jobs.limit(max_rows=1)
    notification = jobs.submit_json({"csv": "a\n1\n2\n"})

    with pytest.raises(InvalidInput) as raised:
        profile_columns(notification, jobs.context(notification))

    assert raised.value.field == "csv"


# Accepting a job -------------------------------------------------------------------------------


def test_parse_stores_upload_with_limits(jobs: CsvJobs) -> None:
    jobs.limit(max_rows=7, max_columns=8, max_field_bytes=9)

    notification = jobs.submit_file(b"a,b\n1,2\n")

    assert notification.input_field == "file"
    assert (notification.max_rows, notification.max_columns, notification.max_field_bytes) == (
        7,
        8,
        9,
    )
    with jobs.files.open(notification.job_id, notification.upload) as stored:
        assert stored.read() == b"a,b\n1,2\n"


def test_json_text_is_stored_as_utf8(jobs: CsvJobs) -> None:
    notification = jobs.submit_json({"csv": "name\nZoë\n"})

    assert notification.input_field == "csv"
    with jobs.files.open(notification.job_id, notification.upload) as stored:
        assert stored.read() == "name\nZoë\n".encode()


def test_notification_payload_round_trips(jobs: CsvJobs) -> None:
    notification = jobs.submit_json({"csv": "a\n1\n"})

    payload = json.loads(json.dumps(notification.to_payload()))

    assert CsvProfileRequested.from_payload(payload) == notification


@pytest.mark.parametrize(
    ("submission", "field", "words"),
    [
        (Submission(content="json", json={"csv": ""}), "csv", "is empty"),
        (Submission(content="json", json={"csv": " \r\n\t"}), "csv", "only whitespace"),
        (Submission(content="json", json={"csv": 42}), "csv", "not a number"),
        (Submission(content="json", json={"csv": ["a,b"]}), "csv", "not an array"),
        (Submission(content="json", json={"csv": None}), "csv", "not null"),
        (Submission(content="json", json={"csv": {"a": 1}}), "csv", "not an object"),
        (Submission(content="json", json={"csv": True}), "csv", "not a boolean"),
        (Submission(content="json", json={"csv": "a\n\ud800\n"}), "csv", "surrogate"),
        (Submission(content="json", json={"csv": "a\n1\n", "mode": "x"}), "mode", "unknown"),
        (Submission(content="json", json={}), "csv", "missing"),
        (Submission(content="multipart"), "file", "missing"),
        (Submission(content="multipart", fields={"file": "a,b"}), "file", "must be a file"),
    ],
)
def test_parse_rejects_bad_request(
    jobs: CsvJobs, submission: Submission, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        jobs.parse(submission)

    assert raised.value.field == field
    assert words in raised.value.message
    assert jobs.files.job_ids() == []


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf  \n", "only whitespace"),
        ("a,b\n1,2\n".encode("utf-16"), "UTF-16"),
        (b"a,b\n\x81,2\n", "neither UTF-8 nor cp1252"),
    ],
)
def test_parse_rejects_bad_file(jobs: CsvJobs, data: bytes, words: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        jobs.submit_file(data)

    assert raised.value.field == "file"
    assert words in raised.value.message
    assert jobs.files.job_ids() == []


def test_parse_rejects_png(jobs: CsvJobs, data_dir: Path) -> None:
    with pytest.raises(InvalidInput) as raised:
        jobs.submit_file((data_dir / "images" / "edge" / "hopper.png").read_bytes())

    assert raised.value.field == "file"
    assert "binary file" in raised.value.message


def test_parse_rejects_extra_part(jobs: CsvJobs) -> None:
    with pytest.raises(InvalidInput) as raised:
        jobs.submit_file(b"a\n1\n", notes=b"hello")

    assert raised.value.field == "notes"


# Progress and cancel ---------------------------------------------------------------------------


def test_progress_reaches_total(jobs: CsvJobs) -> None:
    data = numbered_rows(20_000)

    jobs.profile(data)

    assert jobs.reports[-1] == (len(data), len(data), "profiled 20000 rows")
    done = [report[0] for report in jobs.reports]
    assert done == sorted(done)
    assert all(report[1] == len(data) for report in jobs.reports)


def test_cancel_stops_between_rows(jobs: CsvJobs) -> None:
    data = numbered_rows(20_000)
    notification = jobs.submit_file(data)
    token = CancelToken()

    def cancel_on_first_report(done: float, total: float | None, message: str | None) -> None:
        jobs.record_report(done, total, message)
        token.set("canceled")

    context = jobs.context(notification, cancel_token=token, report=cancel_on_first_report)

    with pytest.raises(JobInterrupted):
        profile_columns(notification, context)

    assert len(jobs.reports) == 1
    assert jobs.reports[0][0] < len(data)


def test_cancel_before_start_stops(jobs: CsvJobs) -> None:
    notification = jobs.submit_file(b"a\n1\n")
    token = CancelToken()
    token.set("timed out")

    with pytest.raises(JobInterrupted, match="timed out"):
        profile_columns(notification, jobs.context(notification, cancel_token=token))

    assert jobs.reports == []


# Summary table ---------------------------------------------------------------------------------


def summary_rows(path: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT job_id, encoding, delimiter, row_count, column_count, profile, stored_at"
            " FROM csv_summaries"
        ).fetchall()
    finally:
        connection.close()


def test_store_summary_writes_row(jobs: CsvJobs, data_dir: Path) -> None:
    notification = jobs.submit_file((data_dir / "csv" / "messy" / "ledger_pipe.csv").read_bytes())
    profile = profile_columns(notification, jobs.context(notification))
    scope = FactoryScope(jobs.registry, jobs.settings)

    try:
        store_summary(notification, jobs.context(notification, scope=scope, result_so_far=profile))
    finally:
        scope.close()

    [row] = summary_rows(jobs.summary_db)
    assert row[:5] == (notification.job_id, "utf-8", "|", 4, 3)
    assert json.loads(row[5]) == profile
    assert datetime.fromisoformat(row[6]).utcoffset() == timedelta(0)


def test_store_summary_twice_keeps_one_row(jobs: CsvJobs) -> None:
    notification = jobs.submit_file(b"a,b\n1,2\n")
    profile = profile_columns(notification, jobs.context(notification))
    changed = {**profile, "rows": 99}

    for attempt_profile in (profile, changed):
        scope = FactoryScope(jobs.registry, jobs.settings)
        try:
            store_summary(
                notification,
                jobs.context(notification, scope=scope, result_so_far=attempt_profile),
            )
        finally:
            scope.close()

    [row] = summary_rows(jobs.summary_db)
    assert row[0] == notification.job_id
    assert row[3] == 99


def test_store_summary_without_profile_fails(jobs: CsvJobs) -> None:
    notification = jobs.submit_file(b"a\n1\n")

    with pytest.raises(MissingProfile, match="profile-columns"):
        store_summary(notification, jobs.context(notification, result_so_far={"rows": 1}))

    assert not jobs.summary_db.exists()


def test_summary_db_closes_after_yield(jobs: CsvJobs) -> None:
    scope = FactoryScope(jobs.registry, jobs.settings)
    connection = scope.resource(SUMMARY_RESOURCE)
    assert connection.execute("SELECT count(*) FROM csv_summaries").fetchone() == (0,)

    scope.close()

    assert jobs.summary_db.parent.is_dir()
    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")


def test_handlers_run_in_order_through_publisher(jobs: CsvJobs, data_dir: Path) -> None:
    notification = jobs.submit_file((data_dir / "csv" / "messy" / "ragged.csv").read_bytes())
    scope = FactoryScope(jobs.registry, jobs.settings)
    context = jobs.context(notification, scope=scope)

    try:
        outcomes = publish(
            notification, jobs.registry.handlers_for(CsvProfileRequested), context, {}
        )
    finally:
        scope.close()

    assert [(o.name, o.status) for o in outcomes] == [
        ("profile-columns", JobStatus.SUCCEEDED),
        ("store-summary", JobStatus.SUCCEEDED),
    ]
    [row] = summary_rows(jobs.summary_db)
    assert row[3] == 4


# Registration ----------------------------------------------------------------------------------


def test_register_adds_job_type(registry: Registry) -> None:
    job_type = registry.get(JOB_TYPE)

    assert job_type.notification is CsvProfileRequested
    assert job_type.accepts == frozenset({"json", "multipart"})
    assert [h.name for h in registry.handlers_for(CsvProfileRequested)] == [
        "profile-columns",
        "store-summary",
    ]
    assert SUMMARY_RESOURCE in registry.resources


# Files that mix UTF-8 and cp1252 ----------------------------------------------------------------


def test_mostly_utf8_file_keeps_its_utf8_text(jobs: CsvJobs) -> None:
    rows = b"".join(b"%d,Z\xc3\xbcrich\n" % number for number in range(2000))
    data = b"id,city\n" + rows + "9999,Köln\n".encode("cp1252")
    profile = jobs.profile(data)
    assert profile["encoding"] == "utf-8"
    city = column(profile, "city")
    assert city["top_values"][0] == {"value": "Zürich", "count": 2000}
    assert {"value": "Köln", "count": 1} in city["top_values"]
    mixed = [p for p in profile["problems"] if p["kind"] == "mixed_encoding"]
    assert [p["line"] for p in mixed] == [2002]


def test_cp1252_line_before_utf8_text_is_mixed_too(jobs: CsvJobs) -> None:
    data = "id,city\n1,Köln\n".encode("cp1252") + "2,Zürich\n".encode()
    profile = jobs.profile(data)
    assert profile["encoding"] == "utf-8"
    assert sorted(v["value"] for v in column(profile, "city")["top_values"]) == ["Köln", "Zürich"]
    assert [p["line"] for p in profile["problems"] if p["kind"] == "mixed_encoding"] == [2]


def test_byte_order_mark_with_cp1252_byte_is_mixed(jobs: CsvJobs) -> None:
    profile = jobs.profile(b"\xef\xbb\xbfa,b\n\xe9,2\n")
    assert profile["encoding"] == "utf-8-sig"
    assert column(profile, "a")["top_values"] == [{"value": "é", "count": 1}]
    assert [p["kind"] for p in profile["problems"]] == ["mixed_encoding"]


def test_plain_cp1252_file_is_not_mixed(jobs: CsvJobs) -> None:
    profile = jobs.profile("id,city\n1,Köln\n2,Zürich\n".encode("cp1252"))
    assert profile["encoding"] == "cp1252"
    assert profile["problems"] == []
