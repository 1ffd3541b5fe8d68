"""The handler's view of its job while it runs: files, progress, cancel token, resources."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Protocol, TypeVar

from queueing.errors import JobInterrupted
from queueing.files import FileStore, check_file_name

T = TypeVar("T")

# Reports closer together than this are dropped (except the last step), so a handler that
# reports on every row cannot flood the status store with writes.
MIN_PROGRESS_INTERVAL = 0.02


class CancelToken:
    """Set when a running job must stop: canceled on request, timed out, or shut down.

    Handlers check it at their checkpoints (`JobContext.check_canceled`, `JobContext.sleep`).
    The first reason set wins; setting it again changes nothing.
    """

    __slots__ = ("_event", "_lock", "_reason")

    def __init__(self) -> None:
        # Every job gets a token and few ever wait on one, so the Event (a Condition and two
        # locks) is made on the first `wait`. A bare Lock costs a tenth of it.
        # _lock guards the writes of _reason and _event. _reason is set once, so a read of it
        # alone (is_set, reason) sees None or the final value and needs no lock.
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._event: threading.Event | None = None

    def set(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            event = self._event
        if event is not None:
            event.set()

    @property
    def reason(self) -> str | None:
        return self._reason

    def is_set(self) -> bool:
        return self._reason is not None

    def wait(self, timeout: float) -> bool:
        """Block until the token is set or `timeout` seconds pass; return whether it is set."""
        with self._lock:
            if self._reason is not None:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class Scope(Protocol):
    """A job's dependency scope: per-job resources, opened on first use, closed at the end."""

    def resource(self, name: str) -> Any: ...

    def run(self, function: Callable[[], T]) -> T: ...

    def close(self) -> None: ...


ProgressSink = Callable[[float, float | None, str | None], None]


class JobContext:
    """The handle a handler gets for one attempt of one job."""

    def __init__(
        self,
        *,
        job_id: str,
        job_type: str,
        attempt: int,
        settings: Mapping[str, Any],
        files: FileStore,
        cancel_token: CancelToken,
        scope: Scope,
        report: ProgressSink,
        result_so_far: Mapping[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_type = job_type
        self.attempt = attempt
        self.settings = settings
        self.cancel_token = cancel_token
        self.outputs: list[str] = []  # names of the files saved by this attempt, in order
        # Merged result parts of the handlers that already succeeded for this job, in
        # registration order, so a later handler can build on an earlier one's output.
        self.result_so_far: dict[str, Any] = dict(result_so_far or {})
        self._files = files
        self._scope = scope
        self._report = report
        self._last_report = float("-inf")

    # Files -------------------------------------------------------------------------------------

    def open_file(self, name: str) -> BinaryIO:
        """Open one of the job's stored files (its upload, say) for reading."""
        return self._files.open(self.job_id, name)

    def save_output(self, name: str, data: bytes | BinaryIO) -> str:
        """Store a result file and return the URL path under which the API serves it."""
        check_file_name(name)
        self._files.save(self.job_id, name, data)
        if name not in self.outputs:
            self.outputs.append(name)
        return self.file_url(name)

    def file_url(self, name: str) -> str:
        return f"/jobs/{self.job_id}/files/{name}"

    # Progress and cancellation -----------------------------------------------------------------

    def report_progress(
        self, done: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record progress; reports that would move it backwards are ignored by the store."""
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last_report < MIN_PROGRESS_INTERVAL:
            return
        self._last_report = now
        self._report(done, total, message)

    @property
    def canceled(self) -> bool:
        return self.cancel_token.is_set()

    def check_canceled(self) -> None:
        """Raise JobInterrupted when the job was canceled or timed out: a checkpoint."""
        if self.cancel_token.is_set():
            raise JobInterrupted(self.cancel_token.reason or "canceled")

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or raise JobInterrupted as soon as the job is canceled or timed out."""
        if self.cancel_token.wait(seconds):
            raise JobInterrupted(self.cancel_token.reason or "canceled")

    # Resources ---------------------------------------------------------------------------------

    def resource(self, name: str) -> Any:
        """Return the per-job resource `name`, opening it on first use; the scope closes it."""
        return self._scope.resource(name)
