"""The JSON documents the API sends for a job: plain dicts, ready for `json.dumps`."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from queueing.jobs import Job


def rfc3339(timestamp: float | None) -> str | None:
    """Format Unix seconds as RFC 3339 UTC with milliseconds, e.g. 2026-12-04T20:46:00.123Z."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_links(job_id: str) -> dict[str, str]:
    base = f"/jobs/{job_id}"
    return {
        "self": base,
        "result": f"{base}/result",
        "cancel": f"{base}/cancel",
        "events": f"{base}/events",
    }


def job_document(job: Job) -> dict[str, Any]:
    progress = job.progress
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status.value,
        "version": job.version,
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
        "next_attempt_at": rfc3339(job.next_attempt_at),
        "attempt": job.attempt,
        "attempts": [
            {
                "number": attempt.number,
                "started_at": rfc3339(attempt.started_at),
                "finished_at": rfc3339(attempt.finished_at),
                "error": _error(attempt.error),
            }
            for attempt in job.attempts
        ],
        "cancel_requested": job.cancel_requested,
        "progress": {
            "done": progress.done,
            "total": progress.total,
            "fraction": progress.fraction,
            "message": progress.message,
        },
        "eta": rfc3339(job.eta),
        "handlers": [
            {"name": handler.name, "status": handler.status.value, "error": handler.error}
            for handler in job.handlers
        ],
        "error": _error(job.error),
        "links": job_links(job.id),
    }


def _error(error: Any) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type.value, "message": error.message}


class EncodedDocuments:
    """The JSON text of recently sent job documents, one per job, for its latest version.

    A document depends on the record alone, and every change raises the record's version, so
    a job id and version name exactly one text. A client polling a job that has not changed
    gets the text encoded for its first poll. Past `max_entries`, the oldest entries go.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._lock = threading.Lock()  # guards _texts
        self._texts: dict[str, tuple[int, str]] = {}  # job id -> (version, JSON text)

    def encode(self, job: Job) -> str:
        with self._lock:
            cached = self._texts.get(job.id)
        if cached is not None and cached[0] == job.version:
            return cached[1]
        # Encode outside the lock; two threads may both encode one version, which is harmless.
        text = json.dumps(job_document(job))
        with self._lock:
            self._texts.pop(job.id, None)  # re-insert, so that eviction takes the oldest write
            self._texts[job.id] = (job.version, text)
            if len(self._texts) > self._max_entries:
                del self._texts[next(iter(self._texts))]
        return text
