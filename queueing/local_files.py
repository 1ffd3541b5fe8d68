"""File store in a local folder: `<data_dir>/jobs/<job id>/<name>`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from queueing.files import FileStore, check_file_name
from queueing.jobs import job_id_time

_COPY_CHUNK = 1024 * 1024


class LocalFileStore(FileStore):
    """Keeps each job's files in a folder of its own under `root`.

    Files are written to a temporary name and renamed into place, so a reader never sees half
    a file. No lock is needed: every write goes to a fresh temporary file.
    """

    name = "local"

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self._jobs_dir = root / "jobs"
        # With `durable`, each file and its folder entry are flushed to disk before `save`
        # returns, so a file saved before a job was accepted survives a power loss too.
        self._durable = durable

    def _job_dir(self, job_id: str) -> Path:
        # Job ids come from URLs; a well-formed UUIDv7 can never climb out of the folder.
        if job_id_time(job_id) is None:
            raise FileNotFoundError(f"no files for malformed job id {job_id!r}")
        return self._jobs_dir / job_id

    def save(self, job_id: str, name: str, source: bytes | BinaryIO) -> int:
        check_file_name(name)
        folder = self._job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-")
        try:
            with os.fdopen(handle, "wb") as out:
                if isinstance(source, bytes | bytearray | memoryview):
                    out.write(source)
                else:
                    shutil.copyfileobj(source, out, _COPY_CHUNK)
                size = out.tell()
                if self._durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, folder / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        if self._durable:
            _fsync_folder(folder)
            _fsync_folder(folder.parent)
        return size

    def open(self, job_id: str, name: str) -> BinaryIO:
        check_file_name(name)
        return (self._job_dir(job_id) / name).open("rb")

    def delete_job(self, job_id: str) -> None:
        try:
            folder = self._job_dir(job_id)
        except FileNotFoundError:
            return
        shutil.rmtree(folder, ignore_errors=True)

    def job_ids(self) -> list[str]:
        if not self._jobs_dir.is_dir():
            return []
        return sorted(entry.name for entry in self._jobs_dir.iterdir() if entry.is_dir())


def _fsync_folder(folder: Path) -> None:
    # A rename or a new entry is durable only once its folder is flushed too (POSIX).
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
