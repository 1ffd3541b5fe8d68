"""Column statistics for the `csv-profile` job type: types, counts, numbers and top values.

Every statistic is kept as a running value fed one cell at a time, so a column of ten million
cells costs no more memory than a column of ten, except for the distinct values (see
`distinct_cap`).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from datetime import date, datetime
from operator import itemgetter
from typing import Any

TOP_VALUES = 5
# Distinct values tracked across all columns of one profile, and the least any column gets.
# An entry is a key of at most _MAX_KEY_CHARS characters, its count and a dict slot. By estimate
# that is 100 to 400 bytes, so the budget keeps one profile to tens of megabytes.
DISTINCT_BUDGET = 100_000
MIN_DISTINCT_PER_COLUMN = 100

# Longer values are tracked by a prefix and a digest, so a column of large fields cannot fill
# memory. The digest keeps their distinct count exact.
_MAX_KEY_CHARS = 64
_SHOWN_PREFIX_CHARS = 48

_BOOLEANS = frozenset({"true", "false", "yes", "no"})
# No leading zeros: "08123" is a code (a postcode, an article number), not the number 8123.
_INTEGER = re.compile(r"[+-]?(?:0|[1-9]\d*)")
_DECIMAL_POINT = re.compile(r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
# "3,50" and "1.234,50", understood only where ';' separates fields, since with ',' as the
# delimiter a comma inside a number is ambiguous.
_DECIMAL_COMMA = re.compile(r"[+-]?(?:0|[1-9]\d{0,2}(?:\.\d{3})+|[1-9]\d*),\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}"  # date and time to the minute
    r"(?::\d{2}(?:\.\d{1,6})?)?"  # seconds and their fraction
    r"(?:Z|[+-]\d{2}:\d{2})?"  # UTC offset
)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Maximum length of a signed 64-bit integer as text: a sign and 19 digits.
_INT64_MAX_CHARS = 20

TrackedValue = str | tuple[str, bytes]


def distinct_cap(columns: int) -> int:
    """Return how many distinct values each of `columns` columns tracks."""
    return max(MIN_DISTINCT_PER_COLUMN, DISTINCT_BUDGET // max(columns, 1))


def parse_number(text: str, *, decimal_comma: bool) -> int | float | None:
    """Return the number a stripped cell holds, or None when it is not a number.

    Whole numbers that fit a signed 64-bit integer come back as int, the rest as a finite float.
    `inf`, `nan` and numbers that overflow a float are not numbers here.
    """
    if len(text) <= _INT64_MAX_CHARS and _INTEGER.fullmatch(text):
        whole = int(text)
        return whole if _INT64_MIN <= whole <= _INT64_MAX else float(whole)
    if _DECIMAL_POINT.fullmatch(text):
        number = float(text)
    elif decimal_comma and _DECIMAL_COMMA.fullmatch(text):
        number = float(text.replace(".", "").replace(",", "."))
    else:
        return None
    return number if math.isfinite(number) else None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _tracked_value(value: str) -> TrackedValue:
    if len(value) <= _MAX_KEY_CHARS:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return (value[:_SHOWN_PREFIX_CHARS], digest)


def _shown_value(tracked: TrackedValue) -> str:
    if isinstance(tracked, str):
        return tracked
    return tracked[0] + "…"


class _CompensatedSum:
    """Neumaier's compensated sum: its rounding error does not grow with the number of terms."""

    __slots__ = ("_compensation", "_total")

    def __init__(self) -> None:
        self._total = 0.0
        self._compensation = 0.0

    def add(self, value: float) -> None:
        total = self._total + value
        if abs(self._total) >= abs(value):
            self._compensation += (self._total - total) + value
        else:
            self._compensation += (value - total) + self._total
        self._total = total

    @property
    def value(self) -> float:
        return self._total + self._compensation


class ColumnStats:
    """Running statistics of one column, fed one cell at a time with `add`.

    A cell that is empty or only whitespace is a null; every other cell counts, stripped of
    surrounding whitespace. `distinct` is exact up to `cap` distinct values. Past the cap, new
    values are no longer tracked. `distinct` is then a lower bound (equal to the cap), the
    result sets `distinct_capped`, and `top_values` counts only the values tracked before the
    cap was reached.
    """

    def __init__(self, name: str, *, cap: int, decimal_comma: bool) -> None:
        self.name = name
        self.count = 0  # cells that are not null
        self.nulls = 0
        self._cap = cap
        self._capped = False
        self._decimal_comma = decimal_comma
        self._values: dict[TrackedValue, int] = {}
        # The types that every non-null cell so far can be read as, narrowed cell by cell.
        # An integer is also a float, and a date is also a datetime.
        self._maybe_boolean = True
        self._maybe_integer = True
        self._maybe_float = True
        self._maybe_date = True
        self._maybe_datetime = True
        self._integer_sum = 0  # exact; the integers of a float column are summed here too
        self._float_sum = _CompensatedSum()
        self._minimum: int | float | None = None
        self._maximum: int | float | None = None

    def add(self, cell: str) -> None:
        value = cell.strip()
        if not value:
            self.nulls += 1
            return
        self.count += 1
        self._track(value)
        if self._maybe_boolean and value.lower() not in _BOOLEANS:
            self._maybe_boolean = False
        if self._maybe_float:
            self._add_number(value)
        if self._maybe_datetime:
            self._add_moment(value)

    def _track(self, value: str) -> None:
        tracked = _tracked_value(value)
        seen = self._values.get(tracked)
        if seen is not None:
            self._values[tracked] = seen + 1
        elif len(self._values) < self._cap:
            self._values[tracked] = 1
        else:
            self._capped = True

    def _add_number(self, value: str) -> None:
        number = parse_number(value, decimal_comma=self._decimal_comma)
        if number is None:
            self._maybe_integer = self._maybe_float = False
            return
        if isinstance(number, int):
            self._integer_sum += number
        else:
            self._maybe_integer = False
            self._float_sum.add(number)
        if self._minimum is None or number < self._minimum:
            self._minimum = number
        if self._maximum is None or number > self._maximum:
            self._maximum = number

    def _add_moment(self, value: str) -> None:
        if _DATE.fullmatch(value) and _is_date(value):
            return
        self._maybe_date = False
        if not (_DATETIME.fullmatch(value) and _is_datetime(value)):
            self._maybe_datetime = False

    @property
    def type(self) -> str:
        if self.count == 0:
            return "empty"
        # The narrowest type that every non-null cell can be read as.
        candidates = (
            (self._maybe_boolean, "boolean"),
            (self._maybe_integer, "integer"),
            (self._maybe_float, "float"),
            (self._maybe_date, "date"),
            (self._maybe_datetime, "datetime"),
        )
        return next((name for possible, name in candidates if possible), "string")

    def to_result(self) -> dict[str, Any]:
        column_type = self.type
        result: dict[str, Any] = {
            "name": self.name,
            "type": column_type,
            "count": self.count,
            "nulls": self.nulls,
            "distinct": len(self._values),
            "distinct_capped": self._capped,
        }
        if column_type in ("integer", "float"):
            result.update(self._number_result(column_type))
        top = heapq.nlargest(TOP_VALUES, self._values.items(), key=itemgetter(1))
        result["top_values"] = [{"value": _shown_value(key), "count": count} for key, count in top]
        return result

    def _number_result(self, column_type: str) -> dict[str, Any]:
        assert self._minimum is not None
        assert self._maximum is not None
        if column_type == "integer":
            # int / int rounds correctly, however large the exact sum.
            mean: float | None = self._integer_sum / self.count
            return {"min": self._minimum, "max": self._maximum, "mean": mean}
        mean = (float(self._integer_sum) + self._float_sum.value) / self.count
        if not math.isfinite(mean):
            # The sum of finite values overflowed; JSON has no infinity to report.
            mean = None
        return {"min": float(self._minimum), "max": float(self._maximum), "mean": mean}
