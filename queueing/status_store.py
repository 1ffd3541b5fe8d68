"""The status-store interface: the record of every job, and the idempotency keys."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from queueing.jobs import Job, JobQuery

T = TypeVar("T")


class StatusStore(ABC):
    """Keeps the status record of every job.

    Readers get copies, never the stored record. Every change goes through `update` with one of
    the functions of `queueing.transitions`, applied atomically, and raises the record's
    `version` by one when it changes anything. Implementations are thread-safe.
    """

    name: str  # the backend's name, as `queue.backend` spells it

    @abstractmethod
    def create(self, job: Job, payload: Mapping[str, Any] | None = None) -> None:
        """Store a new job's record and its idempotency key, if it has one.

        The store may keep `job` itself: the caller must not change it afterwards.

        `payload` is the job's notification as plain values (`Notification.to_payload`).
        Durable backends keep it with the record, so that the job can run after a restart;
        the memory backend ignores it.
        """

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """Return a copy of a job's record; raises JobNotFound."""

    @abstractmethod
    def update(self, job_id: str, change: Callable[[Job], T | None]) -> T | None:
        """Apply `change` to a job's record atomically and return what it returned.

        `change` returns None to leave the record as it was. Anything else means it changed
        the record, which is then saved with `version + 1` and wakes `wait_for_change`.
        It runs under the store's lock, so it must be quick and must not use the store.
        A store may call it more than once, each time on a fresh copy (the SQLite store
        retries it when another writer came first), so it must have no other side effect.
        Raises JobNotFound, or whatever `change` raises (then nothing is saved).
        """

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove a job's record and its idempotency key; raises JobNotFound."""

    @abstractmethod
    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Return up to `query.limit` matching jobs, newest first, older than `query.before`."""

    @abstractmethod
    def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job:
        """Return the job once its version is above `version`, or after `timeout` seconds.

        Returns at once when the version is already above it. Raises JobNotFound.
        """

    @abstractmethod
    def purge(self, created_before: float) -> list[str]:
        """Remove finished jobs created before `created_before`; return their ids."""

    @abstractmethod
    def claim_idempotency_key(self, owner: str | None, key: str) -> Job | None:
        """Claim `key` for a new job, or return the job that already has it.

        Returns None when the key is new: it is then held for the caller until `create` stores
        a job with it or `release_idempotency_key` frees it. Raises IdempotencyKeyInFlight
        while another request has claimed it.
        """

    @abstractmethod
    def release_idempotency_key(self, owner: str | None, key: str) -> None:
        """Free a key claimed for a request that was not accepted after all."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release what the store holds (connections); the default does nothing."""
