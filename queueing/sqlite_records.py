"""Job records as the SQLite backend stores them: `Job.to_record()` as compact JSON.

`encode_job` builds the same dict as `Job.to_record()` field by field. The generic
`to_record` walks every nested dataclass with `dataclasses.fields`. That made it the largest
Python cost of a job's writes: 20 µs or more for each of the 3 writes per job, against about
2 µs for the explicit version (timeit, CPython 3.11 on a 2-core AMD EPYC VM).
It is used only while the dataclasses have exactly the fields it knows. Otherwise the generic
one is, so a new field is never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from queueing.errors import JobNotFound
from queueing.jobs import Attempt, ErrorInfo, HandlerOutcome, Job, JobStatus, Progress

T = TypeVar("T")

_KNOWN_FIELDS = {
    Job: (
        "id",
        "type",
        "status",
        "version",
        "created_at",
        "started_at",
        "finished_at",
        "next_attempt_at",
        "attempt",
        "attempts",
        "cancel_requested",
        "progress",
        "eta",
        "handlers",
        "error",
        "result",
        "files",
        "owner",
        "idempotency_key",
        "request_digest",
        "accepted_status",
    ),
    Attempt: ("number", "started_at", "finished_at", "error"),
    HandlerOutcome: ("name", "status", "error", "output", "error_type"),
    Progress: ("done", "total", "message"),
    ErrorInfo: ("type", "message"),
}


def _fields_unchanged() -> bool:
    return all(
        tuple(f.name for f in dataclasses.fields(kind)) == names
        for kind, names in _KNOWN_FIELDS.items()
    )


FAST_ENCODING = _fields_unchanged()


def _error(error: ErrorInfo | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message}


def record_of(job: Job) -> dict[str, Any]:
    """Return what `job.to_record()` returns, built without walking the dataclasses."""
    if not FAST_ENCODING:
        return job.to_record()
    progress = job.progress
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status,
        "version": job.version,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "next_attempt_at": job.next_attempt_at,
        "attempt": job.attempt,
        "attempts": [
            {
                "number": attempt.number,
                "started_at": attempt.started_at,
                "finished_at": attempt.finished_at,
                "error": _error(attempt.error),
            }
            for attempt in job.attempts
        ],
        "cancel_requested": job.cancel_requested,
        "progress": {"done": progress.done, "total": progress.total, "message": progress.message},
        "eta": job.eta,
        "handlers": [
            {
                "name": handler.name,
                "status": handler.status,
                "error": handler.error,
                "output": handler.output,
                "error_type": handler.error_type,
            }
            for handler in job.handlers
        ],
        "error": _error(job.error),
        "result": job.result,
        "files": list(job.files),
        "owner": job.owner,
        "idempotency_key": job.idempotency_key,
        "request_digest": job.request_digest,
        "accepted_status": job.accepted_status,
    }


def _plain(value: Any) -> Any:
    # Handler outputs and results are Mappings of JSON values; json.dumps takes only dicts.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a job record cannot hold {type(value).__name__} values")


def encode_job(job: Job) -> str:
    return json.dumps(record_of(job), separators=(",", ":"), default=_plain)


def decode_job(text: str) -> Job:
    return Job.from_record(json.loads(text))


# Writes the whole record when its version is still the one the change was applied to. A
# lease belongs to a running job: any other status ends it, so a finished job is never taken
# again and a job queued for a retry (or by a shutdown) is free for any worker once due.
_WRITE_JOB = """
    UPDATE jobs SET status = :status, version = :version, due_at = :due_at, record = :record,
        lease_owner = CASE WHEN :running THEN lease_owner END,
        lease_expires = CASE WHEN :running THEN lease_expires END
    WHERE id = :id AND version = :version - 1
"""


def write_params(job: Job) -> dict[str, Any]:
    """Return the parameters of `write_job` for a job whose version was already raised."""
    return {
        "id": job.id,
        "status": job.status.value,
        "version": job.version,
        "due_at": job.next_attempt_at or 0.0,
        "record": encode_job(job),
        "running": job.status is JobStatus.RUNNING,
    }


def write_job(connection: sqlite3.Connection, params: dict[str, Any]) -> bool:
    """Save a changed record unless its row changed since it was read; return whether saved."""
    return connection.execute(_WRITE_JOB, params).rowcount == 1


def apply_change(
    connection: sqlite3.Connection, job_id: str, change: Callable[[Job], T | None]
) -> tuple[T | None, Job]:
    """Read, change and save a record inside the caller's write transaction.

    Returns what `change` returned and the record as it is now. Raises JobNotFound.
    """
    rows = connection.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchall()
    if not rows:
        raise JobNotFound(job_id)
    job = decode_job(rows[0][0])
    result = change(job)
    if result is not None:
        job.version += 1
        write_job(connection, write_params(job))
    return result, job


class RecordCache:
    """The records of the jobs this process took, as it last wrote them.

    `SqliteQueue.get` adds the record of each job it takes. `SqliteStatusStore.update` starts
    from it instead of reading the row, because its compare-and-set on `version` catches a
    record that another process changed since. A record leaves when its job finishes, and the oldest
    one leaves past `capacity` (jobs queued for a retry that another process ran).

    It also carries the attempts that `SqliteQueue.get` started in the transaction that
    leased the job, until the worker calls `SqliteStatusStore.update` to start the job.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()  # guards _records and _starts
        self._records: dict[str, Job] = {}  # insertion order is age
        self._starts: dict[str, Any] = {}  # job id -> transitions.StartedAttempt

    def get(self, job_id: str) -> Job | None:
        """Return a copy of the cached record, or None."""
        with self._lock:
            job = self._records.get(job_id)
        return job.copy() if job is not None else None

    def put(self, job: Job) -> None:
        """Cache `job` itself (not a copy): the caller hands it over and must not change it."""
        with self._lock:
            self._records[job.id] = job
            if len(self._records) > self._capacity:
                del self._records[next(iter(self._records))]

    def refresh(self, job: Job) -> None:
        """Replace the cached record of `job`, if it has one, or drop it once it is final."""
        with self._lock:
            if job.id not in self._records:
                return
            if job.status.is_final:
                del self._records[job.id]
            else:
                self._records[job.id] = job

    def forget(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._records.pop(job_id, None)

    def remember_start(self, job_id: str, started: Any) -> None:
        with self._lock:
            self._starts[job_id] = started

    def take_start(self, job_id: str) -> Any:
        """Return and forget the attempt the queue started for the job, or None."""
        with self._lock:
            return self._starts.pop(job_id, None)
