"""The queue interface: notifications waiting for a worker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from queueing.jobs import Notification


class JobQueue(ABC):
    """Carries notifications from the routes to the workers.

    Submitting is two steps so the status record can be written in between: `reserve` claims
    room (or raises QueueFull), then `put` enqueues, or `release` gives the room back.
    Implementations are thread-safe.
    """

    name: str  # the backend's name, as `queue.backend` spells it
    durable: bool  # whether queued and running jobs outlive the process
    shared: bool = False  # whether other processes may take jobs from the same queue

    @abstractmethod
    def reserve(self) -> None:
        """Claim room for one job; raises QueueFull when `max_size` jobs are queued."""

    @abstractmethod
    def release(self) -> None:
        """Give back room claimed by `reserve` for a job that was not accepted after all."""

    @abstractmethod
    def put(self, notification: Notification) -> None:
        """Enqueue a notification into room claimed by `reserve`."""

    @abstractmethod
    def put_later(self, notification: Notification, at: float) -> None:
        """Enqueue a notification for a retry at `at` (Unix seconds); never refused for room."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> Notification | None:
        """Take the next notification, waiting up to `timeout` seconds (None: until closed).

        Returns None when the wait ran out or the queue was closed.
        """

    @abstractmethod
    def task_done(self, notification: Notification) -> None:
        """Tell the queue that a notification from `get` was handled."""

    @abstractmethod
    def join(self, timeout: float) -> bool:
        """Wait until every notification put was handled; return False if `timeout` ran out."""

    @abstractmethod
    def depth(self) -> int:
        """Return how many jobs wait in the queue, retries included."""

    @abstractmethod
    def close(self) -> None:
        """Stop handing out notifications: waiting and later `get` calls return None."""

    def renew(self, job_ids: Sequence[str]) -> None:  # noqa: B027 - nothing to renew
        """Extend the leases of jobs this process is running; queues without leases do nothing."""

    @abstractmethod
    def drain(self) -> list[Notification]:
        """Remove and return what is still queued (after `close`; durable queues keep theirs)."""
