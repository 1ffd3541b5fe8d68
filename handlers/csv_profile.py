"""The `csv-profile` job type: profile the columns of a CSV file and store a summary of it.

A client sends the file as the multipart part `file`, or the text as the JSON string `csv`.
The `profile-columns` handler returns the profile: encoding, delimiter, row count, one entry per
column, and the problems found. The `store-summary` handler writes it to a SQLite summary table
through the per-job connection `csv-summaries`.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from handlers.csv_encoding import SAMPLE_BYTES, check_sample, scan_input
from handlers.csv_reading import CsvLimits, ProblemLog, RecordReader, detect_delimiter
from handlers.csv_stats import ColumnStats, distinct_cap
from handlers.registry import Intake, Registry, Submission
from queueing.context import JobContext
from queueing.errors import BackburnerError, InvalidInput
from queueing.jobs import Notification

logger = logging.getLogger(__name__)

JOB_TYPE = "csv-profile"
FILE_FIELD = "file"
TEXT_FIELD = "csv"
UPLOAD_NAME = "upload"
SUMMARY_RESOURCE = "csv-summaries"
PROFILE_KEYS = ("encoding", "delimiter", "rows", "columns", "problems")

# Cancel checks and progress reports come every CHECKPOINT_ROWS rows, or sooner for wide rows,
# so that a checkpoint is never more than about CHECKPOINT_CELLS cells away.
CHECKPOINT_ROWS = 2000
CHECKPOINT_CELLS = 100_000
# Seconds a write to the summary database waits for another worker's write to finish.
SUMMARY_BUSY_TIMEOUT_SECONDS = 30.0

_CREATE_SUMMARY_TABLE = """
CREATE TABLE IF NOT EXISTS csv_summaries (
    job_id TEXT PRIMARY KEY,
    stored_at TEXT NOT NULL,
    encoding TEXT NOT NULL,
    delimiter TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    column_count INTEGER NOT NULL,
    profile TEXT NOT NULL
)
"""
# Delivery is at least once, so a job's summary may be stored twice: the second write replaces
# the first instead of failing on the primary key.
_UPSERT_SUMMARY = """
INSERT INTO csv_summaries
    (job_id, stored_at, encoding, delimiter, row_count, column_count, profile)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    stored_at = excluded.stored_at,
    encoding = excluded.encoding,
    delimiter = excluded.delimiter,
    row_count = excluded.row_count,
    column_count = excluded.column_count,
    profile = excluded.profile
"""


class MissingProfile(BackburnerError):
    """Raised when `store-summary` runs for a job that has no profile to store."""


@dataclass(frozen=True, kw_only=True)
class CsvProfileRequested(Notification):
    """A request to profile one stored CSV input, with the limits in force when it came in."""

    upload: str  # name of the stored input among the job's files
    input_field: str  # the request field the input came in, named in error messages
    max_rows: int
    max_columns: int
    max_field_bytes: int

    @property
    def limits(self) -> CsvLimits:
        return CsvLimits(self.max_rows, self.max_columns, self.max_field_bytes)


# Accepting a job -------------------------------------------------------------------------------


def parse_csv_request(submission: Submission, intake: Intake) -> CsvProfileRequested:
    """Check a request, store its CSV input and return the job's notification.

    Raises InvalidInput naming the field for an unknown or missing field, a `csv` value that is
    not a string, and input that is empty, binary or neither UTF-8 nor cp1252 at its start.
    """
    if submission.content == "json":
        field = TEXT_FIELD
        data = _text_from_json(submission)
        encoding = check_sample(
            data[:SAMPLE_BYTES], complete=len(data) <= SAMPLE_BYTES, field=field
        )
        size = intake.save_upload(UPLOAD_NAME, data)
    else:
        field = FILE_FIELD
        submission.check_names([FILE_FIELD])
        stream = submission.require_file(FILE_FIELD).stream
        # Reading one byte more than the sample shows whether the sample is the whole file.
        head = stream.read(SAMPLE_BYTES + 1)
        encoding = check_sample(
            head[:SAMPLE_BYTES], complete=len(head) <= SAMPLE_BYTES, field=field
        )
        stream.seek(0)
        size = intake.save_upload(UPLOAD_NAME, stream)
    logger.debug(
        "Job %s: accepted %d bytes of CSV input from field %s, starting as %s.",
        intake.job_id,
        size,
        field,
        encoding,
    )
    settings = intake.settings["csv"]
    return CsvProfileRequested(
        job_id=intake.job_id,
        upload=UPLOAD_NAME,
        input_field=field,
        max_rows=int(settings["max_rows"]),
        max_columns=int(settings["max_columns"]),
        max_field_bytes=int(settings["max_field_bytes"]),
    )


def _text_from_json(submission: Submission) -> bytes:
    submission.check_names([TEXT_FIELD])
    if TEXT_FIELD not in submission.json:
        raise InvalidInput(TEXT_FIELD, "missing; send the CSV text as a JSON string")
    text = submission.json[TEXT_FIELD]
    if not isinstance(text, str):
        raise InvalidInput(TEXT_FIELD, f"must be a string of CSV text, not {_json_type_name(text)}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInput(
            TEXT_FIELD,
            f"contains an unpaired surrogate escape at character {error.start}, which is not "
            "text; fix the JSON string",
        ) from None


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


# Handlers --------------------------------------------------------------------------------------


def profile_columns(notification: CsvProfileRequested, ctx: JobContext) -> dict[str, Any]:
    """Profile the columns of the job's CSV input and return it: the `profile-columns` handler.

    Raises InvalidInput when the input is over its limits or cannot be read as CSV text.
    """
    field = notification.input_field
    with ctx.open_file(notification.upload) as stream:
        scanned = scan_input(stream, field, ctx.check_canceled)
    delimiter = detect_delimiter(scanned.sample, complete=scanned.sample_is_complete)
    logger.debug(
        "Job %s: reading %d bytes of CSV as %s with delimiter %r.",
        ctx.job_id,
        scanned.size,
        scanned.encoding,
        delimiter,
    )

    problems = ProblemLog()
    if scanned.mixed_from_line is not None:
        problems.add(
            scanned.mixed_from_line,
            "mixed_encoding",
            "the file is UTF-8 but has bytes that are not, from this line on; they were read "
            "as cp1252, so check that text",
        )
    with (
        ctx.open_file(notification.upload) as stream,
        io.TextIOWrapper(
            stream, encoding=scanned.encoding, errors=scanned.errors, newline=""
        ) as text,
    ):
        records = RecordReader(
            text,
            delimiter=delimiter,
            encoding=scanned.encoding,
            field=field,
            limits=notification.limits,
            problems=problems,
        )
        width = len(records.header)
        cap = distinct_cap(width)
        columns = [
            ColumnStats(name, cap=cap, decimal_comma=delimiter == ";") for name in records.header
        ]
        checkpoint_every = max(1, min(CHECKPOINT_ROWS, CHECKPOINT_CELLS // width))
        for row in records:
            for column, cell in zip(columns, row, strict=True):
                column.add(cell)
            if records.rows % checkpoint_every == 0:
                ctx.check_canceled()
                # The stream's position counts the bytes decoded so far, a little ahead of the
                # rows parsed because the text wrapper reads in chunks.
                ctx.report_progress(stream.tell(), scanned.size, f"read {records.rows} rows")

    ctx.report_progress(scanned.size, scanned.size, f"profiled {records.rows} rows")
    result = problems.to_result()
    logger.info(
        "Job %s: profiled %d rows and %d columns of CSV; %d problems listed.",
        ctx.job_id,
        records.rows,
        width,
        len(result),
    )
    return {
        "encoding": scanned.encoding,
        "delimiter": delimiter,
        "rows": records.rows,
        "columns": [column.to_result() for column in columns],
        "problems": result,
    }


def store_summary(notification: CsvProfileRequested, ctx: JobContext) -> None:
    """Write the job's profile to the summary table: the `store-summary` handler.

    Adds nothing to the result document. Raises MissingProfile when `profile-columns` did not
    produce a profile for this job (it failed, say).
    """
    missing = [key for key in PROFILE_KEYS if key not in ctx.result_so_far]
    if missing:
        raise MissingProfile(
            f"job {ctx.job_id} has no CSV profile to store (missing {', '.join(missing)}); "
            "the profile-columns handler did not produce one"
        )
    profile = {key: ctx.result_so_far[key] for key in PROFILE_KEYS}
    connection: sqlite3.Connection = ctx.resource(SUMMARY_RESOURCE)
    with connection:
        connection.execute(
            _UPSERT_SUMMARY,
            (
                ctx.job_id,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
                profile["encoding"],
                profile["delimiter"],
                profile["rows"],
                len(profile["columns"]),
                json.dumps(profile, ensure_ascii=False, allow_nan=False),
            ),
        )
    logger.info("Job %s: stored the CSV summary.", ctx.job_id)


def open_summary_db(settings: Mapping[str, Any]) -> Iterator[sqlite3.Connection]:
    """Yield a connection to the summary database for one job, then close it.

    Creates the database's folder and table when missing. The scope opens and closes it on the
    job's own thread, because a sqlite3 connection may only be used by the thread that made it.
    """
    path = Path(settings["csv"]["summary_db"])
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=SUMMARY_BUSY_TIMEOUT_SECONDS)
    try:
        # WAL lets readers of the summaries carry on while a worker writes.
        connection.execute("PRAGMA journal_mode=WAL")
        with connection:
            connection.execute(_CREATE_SUMMARY_TABLE)
        yield connection
    finally:
        connection.close()


def register(registry: Registry) -> None:
    registry.job_type(
        JOB_TYPE,
        CsvProfileRequested,
        parse_csv_request,
        accepts=frozenset({"json", "multipart"}),
        description="Profile the columns of a CSV file: types, counts, numbers, top values.",
    )
    registry.resource(SUMMARY_RESOURCE, open_summary_db)
    registry.handler(CsvProfileRequested, "profile-columns", profile_columns)
    registry.handler(CsvProfileRequested, "store-summary", store_summary)
