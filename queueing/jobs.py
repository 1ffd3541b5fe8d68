"""Jobs, their statuses and the notifications that carry them through the queue."""

from __future__ import annotations

import dataclasses
import operator
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self


class JobStatus(StrEnum):
    """The stage of a job's life. The values are written unchanged to JSON and SQLite."""

    QUEUED = "queued"  # accepted and waiting for a worker, or for the time of its next attempt
    RUNNING = "running"  # a worker is running its handlers
    SUCCEEDED = "succeeded"  # every handler succeeded; the result is ready (final)
    FAILED = "failed"  # an attempt failed for good, timed out, or was stopped by shutdown (final)
    CANCELED = "canceled"  # stopped on request before it finished (final)

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class ErrorType(StrEnum):
    """The cause of a job's failure: the `error.type` member of the job document."""

    INVALID_INPUT = "invalid_input"  # the input cannot be processed; never retried
    HANDLER_ERROR = "handler_error"  # a handler raised; retried up to `jobs.max_attempts`
    TIMEOUT = "timeout"  # ran past its timeout; never retried
    WORKER_LOST = "worker_lost"  # its worker died mid-run too many times
    SHUTDOWN = "shutdown"  # the service stopped before the job could finish


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as the job document shows it."""

    type: ErrorType
    message: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job: when it started and ended, and how it failed if it did."""

    number: int
    started_at: float
    finished_at: float | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """The outcome of one handler of a job.

    `output` (its part of the result) and `error_type` stay internal: the job document shows
    the merged result and the job's own error.
    """

    name: str
    status: JobStatus
    error: str | None = None
    output: Mapping[str, Any] | None = None
    error_type: ErrorType | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Progress a handler reported: `done` out of `total` (unknown when `total` is None)."""

    done: float = 0
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return max(0.0, min(1.0, self.done / self.total))


NO_PROGRESS = Progress()


@dataclass(slots=True)
class Job:
    """The status record of one job, as the status store keeps it.

    Stores hand out copies (see `copy`); the nested values are immutable, so a shallow copy
    shares nothing a caller could change.
    """

    id: str
    type: str
    status: JobStatus = JobStatus.QUEUED
    version: int = 1
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    attempt: int = 0  # number of the latest attempt that started; 0 before the first one
    attempts: tuple[Attempt, ...] = ()
    cancel_requested: bool = False
    progress: Progress = NO_PROGRESS
    eta: float | None = None
    handlers: tuple[HandlerOutcome, ...] = ()
    error: ErrorInfo | None = None
    result: Mapping[str, Any] | None = None
    files: tuple[str, ...] = ()  # names of the files the job produced, served under /files/
    owner: str | None = None  # digest of the API key that submitted the job, when keys are on
    idempotency_key: str | None = None
    request_digest: str | None = None  # digest of the request content, for idempotent replays
    accepted_status: int = 202  # HTTP status of the response that accepted the job

    def copy(self) -> Job:
        # Every status change and read copies a record, so this reads all fields in one C call.
        return Job(*_read_fields(self))

    def to_record(self) -> dict[str, Any]:
        """Return the record as plain JSON-ready values, for the durable backends."""
        return _to_plain(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Job:
        """Rebuild a job from `to_record`'s output."""
        values = dict(record)
        values["status"] = JobStatus(values["status"])
        values["attempts"] = tuple(
            Attempt(
                number=a["number"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                error=_error_from(a["error"]),
            )
            for a in values["attempts"]
        )
        values["progress"] = Progress(**values["progress"])
        values["handlers"] = tuple(
            HandlerOutcome(
                name=h["name"],
                status=JobStatus(h["status"]),
                error=h["error"],
                output=h["output"],
                error_type=ErrorType(h["error_type"]) if h["error_type"] else None,
            )
            for h in values["handlers"]
        )
        values["error"] = _error_from(values["error"])
        values["files"] = tuple(values["files"])
        return cls(**values)


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_read_fields = operator.attrgetter(*_JOB_FIELDS)


def _error_from(value: Mapping[str, Any] | None) -> ErrorInfo | None:
    if value is None:
        return None
    return ErrorInfo(type=ErrorType(value["type"]), message=value["message"])


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Notification:
    """The message a route enqueues for a job; job types subclass it with their own fields.

    Fields hold JSON values only (tuples for lists), so durable backends can store the payload.
    """

    job_id: str

    def to_payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in payload.items()
        }
        return cls(**values)


# Job ids ---------------------------------------------------------------------------------------

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_job_id(now: float) -> str:
    """Return a UUIDv7 (RFC 9562) for a job created at `now` (Unix seconds).

    The first 48 bits are the creation time in milliseconds, so ids sort by creation time and
    an id alone shows whether its job is past the retention period. Ids made in the same
    millisecond are in random order; `JobIdGenerator` keeps them in order.
    """
    random_bytes = os.urandom(10)
    sequence = int.from_bytes(random_bytes[:2], "big") & 0xFFF
    return _format_uuid7(int(now * 1000), sequence, int.from_bytes(random_bytes[2:], "big"))


def _format_uuid7(millis: int, sequence: int, random_bits: int) -> str:
    rand_b = random_bits & 0x3FFF_FFFF_FFFF_FFFF  # 62 bits
    value = (
        ((millis & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | (sequence << 64) | (0b10 << 62) | rand_b
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# Bytes read from os.urandom at a time by JobIdGenerator: enough for about 400 ids. Each call
# is a system call that releases the GIL, after which the submitting thread must wait for the
# GIL again behind busy worker threads, so ids take their random bits from a block.
_RANDOM_BLOCK = 4096


class JobIdGenerator:
    """Makes UUIDv7 job ids that sort in the order this process made them.

    Within one millisecond the 12 `rand_a` bits count up (RFC 9562, section 6.2, method 1),
    so listings show jobs submitted in one burst in submission order. The random bits come
    from os.urandom, read a block at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _millis, _sequence, _random and _taken
        self._millis = 0
        self._sequence = 0
        self._random = b""
        self._taken = 0  # bytes of _random already used

    def new(self, now: float) -> str:
        millis = int(now * 1000)
        with self._lock:
            if millis > self._millis:
                self._millis = millis
                # Start low in the range so a burst has room to count before it overflows.
                self._sequence = self._random_int(2) & 0x3FF
            else:
                self._sequence += 1
                if self._sequence > 0xFFF:
                    self._millis += 1
                    self._sequence = 0
            millis, sequence = self._millis, self._sequence
            random_bits = self._random_int(8)
        return _format_uuid7(millis, sequence, random_bits)

    def _random_int(self, size: int) -> int:
        # Caller holds _lock. Each byte is used once.
        if self._taken + size > len(self._random):
            self._random = os.urandom(_RANDOM_BLOCK)
            self._taken = 0
        start = self._taken
        self._taken += size
        return int.from_bytes(self._random[start : self._taken], "big")


def job_id_time(job_id: str) -> float | None:
    """Return the creation time (Unix seconds) encoded in a job id, or None if it is malformed."""
    if not _UUID7.match(job_id):
        return None
    return int(job_id[:8] + job_id[9:13], 16) / 1000


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Filters and paging of a job listing; `before` is the cursor (the last id of a page)."""

    status: JobStatus | None = None
    type: str | None = None
    owner: str | None = None
    limit: int = 50
    before: str | None = None
