"""The one exception hierarchy of Backburner.

Every error the service raises on purpose derives from `BackburnerError`. The HTTP layer maps
each class to a status code; the worker maps the ones a handler raises to a job's error type.
"""

from __future__ import annotations


class BackburnerError(Exception):
    """Raised for any error Backburner raises on purpose."""


# Settings and registration ---------------------------------------------------------------------


class SettingsError(BackburnerError):
    """Raised when a setting is unknown or has a value it does not accept."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"setting {setting}: {message}")
        self.setting = setting


class RegistryError(BackburnerError):
    """Raised for a problem with the job types and handlers registry."""


class DuplicateRegistration(RegistryError):
    """Raised when a job type, notification, handler or resource is registered twice."""


class UnknownJobType(RegistryError):
    """Raised when a request names a job type that is not registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown job type {name!r}; known types: {', '.join(known) or 'none'}")
        self.name = name
        self.known = known


# Input -----------------------------------------------------------------------------------------


class InputError(BackburnerError):
    """Raised when a request or a job's input cannot be accepted as it is."""


class InvalidInput(InputError):
    """Raised when a field is missing or its value is invalid.

    Raised before a job is accepted, it becomes a 422 response. Raised by a handler while the
    job runs, it ends the job `failed` with error type `invalid_input`, which is never retried.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnsupportedContent(InputError):
    """Raised when the request body's content type is not one the job type takes."""


class MalformedRequest(InputError):
    """Raised when the request body cannot be parsed at all (malformed JSON, say)."""


class PayloadTooLarge(InputError):
    """Raised when a request body is larger than `uploads.max_bytes`."""


# Queue and jobs --------------------------------------------------------------------------------


class QueueError(BackburnerError):
    """Raised when the queue cannot take a job."""


class QueueFull(QueueError):
    """Raised when `queue.max_size` jobs are already queued."""


class ShuttingDown(QueueError):
    """Raised when a job is submitted while the service is shutting down."""


class JobLookupError(BackburnerError):
    """Raised when a job cannot be found or is in the wrong state for a request."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(JobLookupError):
    """Raised when no job has the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id, f"job {job_id} not found")


class JobExpired(JobLookupError):
    """Raised when a job id is older than the retention period, so its job was purged."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            job_id, f"job {job_id} is older than the retention period and has been purged"
        )


class JobStateConflict(JobLookupError):
    """Raised when a request needs the job in another state (cancel a finished job, say)."""

    def __init__(self, job_id: str, message: str, *, status: str) -> None:
        super().__init__(job_id, message)
        self.status = status


class IdempotencyError(BackburnerError):
    """Raised when an `Idempotency-Key` cannot be honoured for a request."""


class IdempotencyKeyReused(IdempotencyError):
    """Raised when an idempotency key comes back with other content than its first request."""


class IdempotencyKeyInFlight(IdempotencyError):
    """Raised when the first request with an idempotency key is still being accepted."""


class WaitSlotsExhausted(BackburnerError):
    """Raised when every long-poll slot of this process is taken."""


class BackendUnavailable(BackburnerError):
    """Raised when the queue or status-store backend cannot be reached."""


# Raised inside handlers ------------------------------------------------------------------------


class JobInterrupted(BackburnerError):
    """Raised inside a handler at a checkpoint after the job was canceled or timed out."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"job interrupted: {reason}")
        self.reason = reason


class ScopeCloseError(BackburnerError):
    """Raised when one or more per-job resources failed to close."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        names = ", ".join(f"{name} ({type(error).__name__}: {error})" for name, error in failures)
        super().__init__(f"closing per-job resources failed: {names}")
        self.failures = failures
