"""The SQLite backend's database file: schema, per-thread connections and group commit.

`SqliteStatusStore` (`queueing.sqlite_store`) and `SqliteQueue` (`queueing.sqlite_queue`) share
one `SqliteDatabase`. The queue is the `jobs` table itself: a queued row is a queued job, so
accepting a job is one insert and one commit, and a worker takes a job by leasing its row.
"""

from __future__ import annotations

import _thread
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from queueing.errors import BackendUnavailable
from queueing.sqlite_records import RecordCache

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1  # kept in PRAGMA user_version; a file with another version is refused
# How long a connection waits for another process's write transaction before giving up.
BUSY_TIMEOUT_SECONDS = 15.0
FINAL_CONDITION = "status IN ('succeeded', 'failed', 'canceled')"
# The condition of the partial index on unfinished jobs. A query uses that index only if its
# WHERE clause repeats this text, as SQLite does not work out that `status = 'queued'`
# implies it.
UNFINISHED_CONDITION = "status IN ('queued', 'running')"

_SCHEMA = (
    # `record` is `Job.to_record()` as JSON; the other columns repeat the parts of it that
    # queries filter on. `payload` is the notification (`Notification.to_payload()`) as JSON.
    # A queued row is handed out once `due_at` (Unix seconds) has passed. A running row is
    # leased to the process that runs it (`lease_owner`) until `lease_expires`.
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL,
        owner TEXT,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL,
        record TEXT NOT NULL,
        payload TEXT NOT NULL
    )""",
    # Every index entry a job's write changes is one more page in the WAL, and pages are most
    # of what a commit writes and an fsync flushes. So the indexes are few, and partial:
    # finished jobs leave the index on status (taking a job and finding expired leases need
    # only queued and running rows), and jobs without an API key stay out of the one on owner.
    # Listing finished jobs by status or by type scans ids newest first, and the purge scans
    # ids oldest first (ids are UUIDv7, so in order of creation).
    f"CREATE INDEX IF NOT EXISTS unfinished_jobs ON jobs (status, id) WHERE {UNFINISHED_CONDITION}",
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id) WHERE owner IS NOT NULL",
    # `owner` is '' when API keys are off, because NULL never matches in a primary key.
    # `job_id` is NULL while the first request with the key is still being accepted.
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        job_id TEXT,
        claimed_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_by_job ON idempotency_keys (job_id)"
    " WHERE job_id IS NOT NULL",
)


@dataclass(eq=False, slots=True)
class _Write:
    """One write waiting for a group commit, and what came of it.

    `signal` is a lock held from the start. Releasing it wakes the thread waiting for this
    write, because the write is done or because that thread must lead the next batch.
    """

    operation: Callable[[sqlite3.Connection], Any]
    durable: bool
    signal: Any = field(default_factory=_thread.allocate_lock)
    done: bool = False
    batch: int = 0  # number of the batch that committed it
    result: Any = None
    error: BaseException | None = None


@dataclass(eq=False, slots=True)
class _Connection:
    """A connection, and a lock held while it runs a statement.

    close() takes the lock before it closes the connection: Python's sqlite3 frees a closed
    connection's statements at once, so closing it while another thread steps one of them
    would crash the process.
    """

    sqlite: sqlite3.Connection
    in_use: threading.Lock = field(default_factory=threading.Lock)


class SqliteDatabase:
    """One SQLite file in WAL mode: a connection per thread, and writes by group commit.

    Writes from every thread of the process go through `write`. While one thread commits a
    batch, the writes that arrive meanwhile queue up. When it is done, it wakes the first of
    them, which commits all of them as the next batch in one transaction. Every batch runs on
    the one writer connection, so its page cache stays current, and no write of this process
    waits for SQLite's file lock behind another write of this process. Reads run on the
    calling thread's own connection and see the last commit.

    Every commit uses `synchronous=NORMAL`, which in WAL mode survives a killed process but
    not a power cut. With `synchronous="full"`, a durable write then waits for an fsync of the
    WAL file, made after the commit and outside the write lock: the next batch commits while
    it runs, and one fsync covers every batch committed before it started. That is what
    SQLite's own `synchronous=FULL` does in WAL mode (sync the WAL after each commit), minus
    holding the write lock during the sync.
    """

    def __init__(
        self,
        path: str | Path,
        synchronous: Literal["normal", "full"] = "normal",
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path)
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._sync_durable = synchronous == "full"
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        # _lock guards _connections, _closed, _pending, _committing and _committed.
        self._connections: list[_Connection] = []
        self._closed = False
        self._pending: list[_Write] = []  # writes waiting for the next batch
        self._committing = False  # a thread leads a batch now, or was woken to lead the next
        self._committed = 0  # number of the last batch committed
        self._writer: _Connection | None = None  # used only by the batch's leader
        self._sync_lock = threading.Lock()  # held during an fsync; guards _synced and _wal
        self._synced = 0  # number of the last batch known to be on disk
        self._wal: int | None = None  # file descriptor of the WAL file, for fsync
        self._watch_lock = threading.Lock()  # guards _watchers
        self._watchers: dict[str, list[threading.Event]] = {}
        self.records = RecordCache()
        try:
            self._create_schema()
        except BackendUnavailable:
            self.close()
            raise

    # Connections -------------------------------------------------------------------------------

    def _open(self) -> _Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False so that close() can close every connection, and so that
            # the writer connection serves whichever thread leads a batch (one at a time).
            connection = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as error:
            raise self._unavailable("opening", error) from error
        handle = _Connection(connection)
        with self._lock:
            if self._closed:
                connection.close()
                raise self._closed_error()
            self._connections.append(handle)
        return handle

    def _connection(self) -> _Connection:
        # NOTE: the connection of a thread that ends stays open until close(). The threads of
        # waitress and of the worker pool live as long as the process, so few ever end.
        handle: _Connection | None = getattr(self._local, "connection", None)
        if handle is None:
            handle = self._open()
            self._local.connection = handle
        return handle

    def _create_schema(self) -> None:
        connection = self._connection().sqlite
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise BackendUnavailable(
                    f"the SQLite database {self.path} cannot use WAL mode (it stays in {mode} "
                    "mode); put queue.sqlite_path on a local file system"
                )
            connection.execute("BEGIN IMMEDIATE")
            try:
                version = connection.execute("PRAGMA user_version").fetchall()[0][0]
                if version not in (0, SCHEMA_VERSION):
                    raise BackendUnavailable(
                        f"the SQLite database {self.path} has schema version {version}; this "
                        f"version of Backburner reads version {SCHEMA_VERSION} only"
                    )
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                connection.execute("COMMIT")
            finally:
                self._roll_back(connection)
        except sqlite3.Error as error:
            raise self._unavailable("creating the tables of", error) from error

    def _unavailable(self, action: str, error: BaseException) -> BackendUnavailable:
        return BackendUnavailable(f"{action} the SQLite database {self.path} failed: {error}")

    def _closed_error(self) -> BackendUnavailable:
        return BackendUnavailable(f"the SQLite database {self.path} is closed")

    def close(self) -> None:
        """Close every connection; later calls raise BackendUnavailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles, self._connections = self._connections, []
        for handle in handles:
            # Waits for a statement running on the connection. That thread's next call finds
            # the database closed and raises BackendUnavailable.
            with handle.in_use:
                handle.sqlite.close()
        with self._sync_lock:
            if self._wal is not None:
                os.close(self._wal)
                self._wal = None
        self.wake(self._watched())

    # Reads -------------------------------------------------------------------------------------

    def read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Run a query on this thread's connection and return all its rows."""
        handle = self._connection()
        with handle.in_use:
            if self._closed:
                raise self._closed_error()
            try:
                return handle.sqlite.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise self._unavailable("reading", error) from error

    # Writes ------------------------------------------------------------------------------------

    def write(self, operation: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """Run `operation` in a write transaction and return what it returned, once committed.

        `operation` may raise only before it writes anything, because it shares the
        transaction with the other writes of its batch: what it raises is raised here, and the
        rest of the batch commits. sqlite3 errors become BackendUnavailable.

        A `durable` write returns only once it survives a power cut, when the database was
        opened with `synchronous="full"`. Other writes wait for no fsync of their own, though
        a checkpoint that SQLite runs at the end of a commit (every 1000 WAL pages) syncs too.
        SQLite appends every commit to the WAL file, so the next fsync of that file makes
        earlier writes durable as well.
        """
        write = _Write(operation, durable)
        write.signal.acquire()
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._pending.append(write)
            leading = not self._committing
            self._committing = True
        if not leading:
            # The GIL is released while blocked here. The leader of the batch that holds this
            # write releases the lock when it is done, or to hand this thread the next batch.
            write.signal.acquire()
            leading = not write.done
        if leading:
            self._lead_batch()
        if write.error is not None:
            if isinstance(write.error, sqlite3.Error):
                raise self._unavailable("writing to", write.error) from write.error
            raise write.error
        if durable and self._sync_durable:
            self._sync(write.batch)
        return write.result

    def _lead_batch(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        committed = False
        try:
            committed = self._commit(batch)
        finally:
            with self._lock:
                if committed:
                    self._committed += 1
                for item in batch:
                    item.done = True
                    item.batch = self._committed
                successor = self._pending[0] if self._pending else None
                self._committing = successor is not None
            for item in batch:
                if item.signal.locked():
                    item.signal.release()
            if successor is not None:
                successor.signal.release()

    def _commit(self, batch: list[_Write]) -> bool:
        if self._writer is None:
            self._writer = self._open()
        with self._writer.in_use:
            if self._closed:
                for item in batch:
                    item.error = self._closed_error()
                return False
            return self._commit_on(self._writer.sqlite, batch)

    def _commit_on(self, connection: sqlite3.Connection, batch: list[_Write]) -> bool:
        committed = False
        failure: BackendUnavailable | None = None
        try:
            connection.execute("BEGIN IMMEDIATE")
            for item in batch:
                try:
                    item.result = item.operation(connection)
                # The error belongs to the thread that asked for this write: write() raises it
                # there. The operation wrote nothing (see write()), so the batch goes on.
                except Exception as error:
                    item.error = error
                    if not connection.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk, say).
                        raise sqlite3.DatabaseError(f"the transaction was lost: {error}") from error
            connection.execute("COMMIT")
            committed = True
        except sqlite3.Error as error:
            failure = self._unavailable("committing to", error)
            logger.error("A write batch of %d operations failed: %s", len(batch), failure)
        finally:
            if not committed:
                self._roll_back(connection)
                failure = failure or BackendUnavailable("the write batch was interrupted")
                for item in batch:
                    item.error, item.result = failure, None
        return committed

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("Rolling back a failed write batch on %s failed.", self.path)

    def sync_committed(self) -> None:
        """Make every commit so far durable, if the database syncs durable writes at all."""
        if not self._sync_durable:
            return
        with self._lock:
            committed = self._committed
        if self._synced < committed:  # a racy read is fine: _sync checks again under its lock
            self._sync(committed)

    def _sync(self, batch: int) -> None:
        """Return once batch number `batch` is on disk, syncing the WAL file if need be."""
        with self._sync_lock:
            if self._synced >= batch:
                return  # another thread's fsync, started after that batch, covered it
            with self._lock:
                target = self._committed
            try:
                wal = self._wal_descriptor()
                if hasattr(os, "fdatasync"):
                    os.fdatasync(wal)
                else:
                    os.fsync(wal)
            except OSError as error:
                raise self._unavailable(f"syncing {self._wal_path} of", error) from error
            self._synced = target

    def _wal_descriptor(self) -> int:
        # Caller holds _sync_lock. SQLite deletes the WAL file only when the last connection
        # to the database closes, which this process's own connections prevent. A deleted
        # file is looked for anyway, so that a new one is never left unsynced.
        if self._wal is not None and os.fstat(self._wal).st_nlink == 0:
            os.close(self._wal)
            self._wal = None
        if self._wal is None:
            self._wal = os.open(self._wal_path, os.O_RDONLY)
        return self._wal

    # Waking readers ----------------------------------------------------------------------------

    def watch(self, job_id: str) -> threading.Event:
        """Return an event that `wake` sets when this process changes the job."""
        event = threading.Event()
        with self._watch_lock:
            self._watchers.setdefault(job_id, []).append(event)
        return event

    def unwatch(self, job_id: str, event: threading.Event) -> None:
        with self._watch_lock:
            events = self._watchers.get(job_id)
            if events is not None and event in events:
                events.remove(event)
                if not events:
                    del self._watchers[job_id]

    def wake(self, job_ids: Iterable[str]) -> None:
        """Set the events of everyone watching these jobs; call it after the commit."""
        with self._watch_lock:
            if not self._watchers:
                return
            events = [event for job_id in job_ids for event in self._watchers.get(job_id, ())]
        for event in events:
            event.set()

    def _watched(self) -> list[str]:
        with self._watch_lock:
            return list(self._watchers)
