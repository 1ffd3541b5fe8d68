"""The JSON documents the API sends for a job: plain dicts, ready for `json.dumps`."""

from __future__ import annotations

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
