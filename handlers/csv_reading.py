"""Reading CSV text for the `csv-profile` job type: the delimiter, then record by record.

Records are parsed one at a time after the encoding check (see `handlers.csv_encoding`), so
memory stays bounded by the widest record, not the file.
"""

from __future__ import annotations

import csv
import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from queueing.errors import InvalidInput

# Delimiters a profile recognises; anything else is read as part of a single column.
DELIMITERS = (",", ";", "\t", "|")
MAX_LISTED_PROBLEMS = 100

# Records the fallback delimiter detection looks at.
_FALLBACK_RECORDS = 100

# Guards reading and raising the csv module's field size limit, which is process-wide.
_field_limit_lock = threading.Lock()


@dataclass(frozen=True)
class CsvLimits:
    """Input size limits of one job, from the `csv.*` settings in force when it was accepted."""

    max_rows: int
    max_columns: int
    max_field_bytes: int


# Delimiter -------------------------------------------------------------------------------------


def detect_delimiter(sample: str, *, complete: bool) -> str:
    """Return the field delimiter of a CSV text sample: `,`, `;`, tab or `|`.

    csv.Sniffer decides first, restricted to those candidates, because without a list it
    guesses a space for some comma-separated files. It fails on some valid files (a quoted
    field that spans lines, ragged rows), so consistent field counts decide next, and the comma
    wins when nothing fits.
    """
    if not complete and "\n" in sample:
        # Drop the last line, which the end of the sample may have cut short.
        sample = sample[: sample.rindex("\n") + 1]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        delimiter = ""
    if delimiter in DELIMITERS:
        return delimiter
    return _delimiter_by_field_counts(sample) or ","


def _delimiter_by_field_counts(sample: str) -> str | None:
    """Return the candidate whose records most often have as many fields as the first one."""
    best: str | None = None
    best_score = (0.0, 0)
    for candidate in DELIMITERS:
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=candidate)
        widths = [len(record) for record in itertools.islice(reader, _FALLBACK_RECORDS) if record]
        if not widths or widths[0] < 2:
            continue
        score = (widths.count(widths[0]) / len(widths), widths[0])
        if score > best_score:
            best, best_score = candidate, score
    return best


# Records ---------------------------------------------------------------------------------------


class ProblemLog:
    """Oddities found in the input, each with the line it starts on.

    The first MAX_LISTED_PROBLEMS are listed, and one closing entry counts the rest. A file
    with a million ragged rows still gets a small result document.
    """

    def __init__(self) -> None:
        self._listed: list[dict[str, Any]] = []
        self._unlisted = 0
        self._first_unlisted_line = 0

    def add(self, line: int, kind: str, message: str) -> None:
        if len(self._listed) < MAX_LISTED_PROBLEMS:
            self._listed.append({"line": line, "kind": kind, "message": message})
            return
        if self._unlisted == 0:
            self._first_unlisted_line = line
        self._unlisted += 1

    def to_result(self) -> list[dict[str, Any]]:
        if not self._unlisted:
            return list(self._listed)
        summary = {
            "line": self._first_unlisted_line,
            "kind": "too_many_problems",
            "message": f"{self._unlisted} more problems from this line on are not listed",
        }
        return [*self._listed, summary]


class _LineSource:
    """The lines of a text stream for csv.reader, noting quote characters and the end of input.

    csv.reader pulls lines only until a record is complete, so the quotes counted since the last
    `take_quotes` belong to the record it has just returned.
    """

    def __init__(self, text: TextIO) -> None:
        self._lines = iter(text)
        self._quotes = 0
        self.at_end = False

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        try:
            line = next(self._lines)
        except StopIteration:
            self.at_end = True
            raise
        self._quotes += line.count('"')
        return line

    def take_quotes(self) -> int:
        quotes, self._quotes = self._quotes, 0
        return quotes


def _allow_csv_fields_of(chars: int) -> None:
    """Raise the csv module's field size limit to at least `chars` characters.

    The limit is process-wide, so it is only ever raised: lowering it could break a job with a
    larger `max_field_bytes` that runs on another thread. Each job checks its own limit, in
    bytes, after a field is read.
    """
    with _field_limit_lock:
        if csv.field_size_limit() < chars:
            csv.field_size_limit(chars)


class RecordReader:
    """The data rows of a CSV text stream, each fitted to the header's width.

    Reads the header on construction. Short rows are padded with empty cells and long rows
    lose their extra fields; both, and blank lines, go to `problems`. Input over `limits`
    raises InvalidInput naming `field`.
    """

    def __init__(
        self,
        text: TextIO,
        *,
        delimiter: str,
        encoding: str,
        field: str,
        limits: CsvLimits,
        problems: ProblemLog,
    ) -> None:
        _allow_csv_fields_of(limits.max_field_bytes)
        self._lines = _LineSource(text)
        # The default dialect: fields quoted with '"', a quote inside one doubled.
        self._reader = csv.reader(self._lines, delimiter=delimiter)
        self._field = field
        self._limits = limits
        self._problems = problems
        # cp1252 spends one byte per character and UTF-8 at most four, so a field of up to
        # this many characters is within the byte limit without encoding it to count.
        self._byte_encoding = "cp1252" if encoding == "cp1252" else "utf-8"
        bytes_per_char = 1 if encoding == "cp1252" else 4
        self._safe_field_chars = limits.max_field_bytes // bytes_per_char
        self.rows = 0
        self.header = self._read_header()

    def __iter__(self) -> Iterator[list[str]]:
        width = len(self.header)
        while (item := self._next_record()) is not None:
            line, record = item
            if self._is_blank(record):
                self._problems.add(line, "blank_line", "blank line; it is not counted as a row")
                continue
            if len(record) != width:
                self._fit(line, record, width)
            self.rows += 1
            if self.rows > self._limits.max_rows:
                raise InvalidInput(
                    self._field,
                    f"has more than {self._limits.max_rows} rows, the limit set by "
                    "csv.max_rows; split the file",
                )
            yield record

    def _read_header(self) -> list[str]:
        while (item := self._next_record()) is not None:
            line, record = item
            if not record:
                self._problems.add(line, "blank_line", "blank line before the header row")
                continue
            self._check_width(line, record)
            self._check_names(line, record)
            return record
        raise InvalidInput(self._field, "contains no header row")

    def _check_names(self, line: int, names: list[str]) -> None:
        seen: set[str] = set()
        for number, name in enumerate(names, start=1):
            if not name.strip():
                self._problems.add(line, "empty_column_name", f"column {number} has no name")
            elif name in seen:
                self._problems.add(
                    line, "duplicate_column_name", f"column {number} repeats the name {name!r}"
                )
            seen.add(name)

    def _next_record(self) -> tuple[int, list[str]] | None:
        """Return the next record and the line it starts on, or None at the end of input."""
        line = self._reader.line_num + 1
        try:
            record = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as error:
            # Non-strict csv.reader accepts almost any text, so the message keeps csv's own
            # words and names the two likely causes.
            raise InvalidInput(
                self._field,
                f"the record starting on line {line} cannot be read ({error}); a field is "
                f"probably larger than {self._limits.max_field_bytes} bytes, the limit set by "
                "csv.max_field_bytes, or a quoted field is never closed",
            ) from None
        self._check_field_sizes(line, record)
        if self._lines.take_quotes() % 2:
            if self._lines.at_end:
                self._problems.add(
                    line,
                    "unclosed_quote",
                    "a quoted field is never closed, so the rest of the input was read into it",
                )
            else:
                self._problems.add(
                    line,
                    "stray_quote",
                    "an unquoted field contains a quote character; it was kept as text",
                )
        return line, record

    def _check_field_sizes(self, line: int, record: list[str]) -> None:
        if not record or max(map(len, record)) <= self._safe_field_chars:
            return
        limit = self._limits.max_field_bytes
        for number, value in enumerate(record, start=1):
            if len(value) > self._safe_field_chars and (
                len(value.encode(self._byte_encoding)) > limit
            ):
                raise InvalidInput(
                    self._field,
                    f"field {number} of the record starting on line {line} is larger than "
                    f"{limit} bytes, the limit set by csv.max_field_bytes",
                )

    def _check_width(self, line: int, record: list[str]) -> None:
        if len(record) > self._limits.max_columns:
            raise InvalidInput(
                self._field,
                f"the record starting on line {line} has {len(record)} fields, more than "
                f"{self._limits.max_columns}, the limit set by csv.max_columns",
            )

    def _is_blank(self, record: list[str]) -> bool:
        # A line of spaces in a file of several columns is a blank line, not a short row.
        if not record:
            return True
        return len(self.header) > 1 and len(record) == 1 and not record[0].strip()

    def _fit(self, line: int, record: list[str], width: int) -> None:
        count = len(record)
        if count < width:
            self._problems.add(
                line,
                "short_row",
                f"the row has {count} fields, the header has {width}; "
                "the missing cells count as empty",
            )
            record.extend([""] * (width - count))
            return
        self._check_width(line, record)
        self._problems.add(
            line,
            "long_row",
            f"the row has {count} fields, the header has {width}; the extra fields are ignored",
        )
        del record[width:]
