"""The SQLite status store: job records and idempotency keys in the backend's database file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar, cast

from queueing import transitions
from queueing.clock import Clock
from queueing.errors import IdempotencyKeyInFlight, JobNotFound
from queueing.jobs import Job, JobQuery
from queueing.sqlite import FINAL_CONDITION, UNFINISHED_CONDITION, SqliteDatabase
from queueing.sqlite_records import apply_change, decode_job, encode_job, write_job, write_params
from queueing.status_store import StatusStore

T = TypeVar("T")

# A claim on an idempotency key that no job took within this time is treated as free: the
# request that held it most likely died with its process.
STALE_CLAIM_SECONDS = 60.0
# Between wake-ups from this process, waiters re-read the version this often, to see changes
# that other processes (`backburner worker`) made.
POLL_SECONDS = 0.15

# The worker side's changes that a client cannot rely on anyway. At `synchronous=full` they are
# committed before update() returns and before waiters wake, so they are visible and survive a
# killed process. But they wait for no fsync: they reach the disk with the next one. The next
# accepted job, finish, cancel or delete makes one, and so does a worker that found no job for
# `sqlite_queue.POLL_SECONDS`. If a power cut loses one, the job is back to queued or an
# earlier progress, and its lease brings it back to run again. A finish does wait for its
# fsync: a client shown "succeeded" must never see the job run again after a power cut. Any
# other change, including one wrapped in something other than functools.partial, waits too.
_CHANGES_WITHOUT_FSYNC = frozenset({transitions.start, transitions.record_progress})

# The purge's rows. Job ids are UUIDv7, whose first 48 bits are the creation time in ms, so
# the scan of the primary key stops at the first id made after `:id_bound`.
FINISHED_BEFORE = f"FROM jobs WHERE id < :id_bound AND created_at < :before AND {FINAL_CONDITION}"

_INSERT_JOB = """
    INSERT INTO jobs (id, type, status, version, owner, created_at, due_at, record, payload)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SET_KEY = """
    INSERT INTO idempotency_keys (owner, key, job_id, claimed_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (owner, key) DO UPDATE SET job_id = excluded.job_id,
        claimed_at = excluded.claimed_at
"""


class SqliteStatusStore(StatusStore):
    """Job records as JSON rows of the `jobs` table, changed by compare-and-set on `version`.

    `update` reads the record and applies the change outside the write lock. It then writes
    the record only if the version is still the one it read. If another writer came first,
    it applies the change again inside the write transaction. The slow part (decoding, the
    change, encoding) thus runs in parallel with other threads' commits.
    """

    name = "sqlite"

    def __init__(self, database: SqliteDatabase, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def create(self, job: Job, payload: Mapping[str, Any] | None = None) -> None:
        # A job created without its notification can still run if its notification has no
        # field but the job id. A job of any other type fails when a worker takes it.
        notification = dict(payload) if payload is not None else {"job_id": job.id}
        row = (
            job.id,
            job.type,
            job.status.value,
            job.version,
            job.owner,
            job.created_at,
            job.next_attempt_at or 0.0,
            encode_job(job),
            json.dumps(notification, separators=(",", ":")),
        )
        key = None
        if job.idempotency_key is not None:
            key = (job.owner or "", job.idempotency_key, job.id, self._clock.now())

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(_INSERT_JOB, row)
            if key is not None:
                connection.execute(_SET_KEY, key)

        # This commit is what makes the 202 truthful, so it is durable.
        self._db.write(insert, durable=True)

    def get(self, job_id: str) -> Job:
        rows = self._db.read("SELECT record FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return decode_job(rows[0][0])

    def update(self, job_id: str, change: Callable[[Job], T | None]) -> T | None:
        function = getattr(change, "func", change)
        if function is transitions.start:
            # SqliteQueue.get started the attempt when it leased the job (one commit instead
            # of two); the worker asking to start it next gets that attempt.
            started = self._db.records.take_start(job_id)
            if started is not None:
                return cast(T, started)
        durable = function not in _CHANGES_WITHOUT_FSYNC
        job = self._db.records.get(job_id)
        if job is not None:
            result = change(job)
            # A cached record may be out of date, so "no change" is only believed from the row.
            if result is not None and self._save_if_unchanged(job, durable):
                return result
        job = self.get(job_id)
        result = change(job)
        if result is None:
            return None
        if self._save_if_unchanged(job, durable):
            return result
        # Someone changed the record after it was read: apply the change to the current one.
        result, job = self._db.write(
            partial(apply_change, job_id=job_id, change=change), durable=durable
        )
        self._db.records.refresh(job)
        if result is not None:
            self._db.wake((job_id,))
        return result

    def _save_if_unchanged(self, job: Job, durable: bool) -> bool:
        """Save a changed record unless its row changed since it was read; return whether."""
        job.version += 1
        if not self._db.write(partial(write_job, params=write_params(job)), durable=durable):
            return False
        self._db.records.refresh(job)
        self._db.wake((job.id,))
        return True

    def delete(self, job_id: str) -> None:
        def remove(connection: sqlite3.Connection) -> None:
            if connection.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise JobNotFound(job_id)
            connection.execute("DELETE FROM idempotency_keys WHERE job_id = ?", (job_id,))

        self._db.write(remove, durable=True)
        self._db.records.forget((job_id,))
        self._db.wake((job_id,))

    def list_jobs(self, query: JobQuery) -> list[Job]:
        conditions: list[str] = []
        params: list[Any] = []
        # NOTE: only queued and running jobs, and jobs of one owner, are indexed. A listing by
        # a finished status or by type scans ids newest first until it has `limit` jobs, so
        # a rare status or type among many jobs costs a long scan.
        if query.status is not None and not query.status.is_final:
            conditions.append(UNFINISHED_CONDITION)  # lets SQLite use the index of these
        for column, value in (
            ("status", query.status.value if query.status is not None else None),
            ("type", query.type),
            ("owner", query.owner),
        ):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if query.before is not None:
            conditions.append("id < ?")
            params.append(query.before)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._db.read(
            f"SELECT record FROM jobs {where} ORDER BY id DESC LIMIT ?", (*params, query.limit)
        )
        return [decode_job(record) for (record,) in rows]

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job:
        # The event is registered before the first read, so a change committed in between
        # still sets it, and the next read finds the change.
        changed = self._db.watch(job_id)
        try:
            deadline = time.monotonic() + timeout
            while True:
                rows = self._db.read("SELECT version FROM jobs WHERE id = ?", (job_id,))
                if not rows:
                    raise JobNotFound(job_id)
                remaining = deadline - time.monotonic()
                if rows[0][0] > version or remaining <= 0:
                    return self.get(job_id)
                changed.wait(min(remaining, POLL_SECONDS))
                changed.clear()
        finally:
            self._db.unwatch(job_id, changed)

    def purge(self, created_before: float) -> list[str]:
        # A second of slack covers an id whose time is a little after its job's `created_at`,
        # as the id generator moves ahead when one millisecond needs more ids than its 12-bit
        # counter holds.
        bounds = {"id_bound": id_prefix(created_before + 1), "before": created_before}

        def remove(connection: sqlite3.Connection) -> list[str]:
            connection.execute(
                f"DELETE FROM idempotency_keys WHERE job_id IN (SELECT id {FINISHED_BEFORE})",
                bounds,
            )
            rows = connection.execute(f"DELETE {FINISHED_BEFORE} RETURNING id", bounds).fetchall()
            return sorted(job_id for (job_id,) in rows)

        # Not durable: a purge lost in a power cut is simply done again by the next one.
        purged = self._db.write(remove, durable=False)
        self._db.records.forget(purged)
        self._db.wake(purged)
        return purged

    def claim_idempotency_key(self, owner: str | None, key: str) -> Job | None:
        now = self._clock.now()

        def claim(connection: sqlite3.Connection) -> str | None:
            rows = connection.execute(
                "SELECT job_id, claimed_at FROM idempotency_keys WHERE owner = ? AND key = ?",
                (owner or "", key),
            ).fetchall()
            if rows:
                job_id, claimed_at = rows[0]
                if job_id is None and claimed_at > now - STALE_CLAIM_SECONDS:
                    raise IdempotencyKeyInFlight(
                        f"a request with Idempotency-Key {key!r} is still being accepted"
                    )
                if job_id is not None:
                    records = connection.execute(
                        "SELECT record FROM jobs WHERE id = ?", (job_id,)
                    ).fetchall()
                    if records:
                        return str(records[0][0])
            connection.execute(_SET_KEY, (owner or "", key, None, now))
            return None

        # Not durable: a claim lost in a power cut belonged to a request that died with it.
        record = self._db.write(claim, durable=False)
        return decode_job(record) if record is not None else None

    def release_idempotency_key(self, owner: str | None, key: str) -> None:
        def release(connection: sqlite3.Connection) -> None:
            connection.execute(
                "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND job_id IS NULL",
                (owner or "", key),
            )

        self._db.write(release, durable=False)

    def close(self) -> None:
        self._db.close()


def id_prefix(seconds: float) -> str:
    """Return the text that every UUIDv7 job id made before `seconds` (Unix time) sorts below."""
    millis = f"{int(seconds * 1000):012x}"
    return f"{millis[:8]}-{millis[8:]}"
