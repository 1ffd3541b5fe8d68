"""The file-store interface: uploads and result files, kept per job."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import BinaryIO

# File names are chosen by handlers and appear in URLs, so they are kept to one safe path part.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_valid_file_name(name: str) -> bool:
    """Return whether `name` is a plain file name: no folder part, no leading dot, no `..`."""
    return bool(_FILE_NAME.match(name)) and ".." not in name


def check_file_name(name: str) -> None:
    if not is_valid_file_name(name):
        raise ValueError(
            f"invalid file name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class FileStore(ABC):
    """Keeps the files of each job (its upload and what its handlers produce).

    Implementations are thread-safe. A name is unique within its job; saving a name again
    replaces the file.
    """

    name: str  # the backend's name, as `storage.backend` spells it

    @abstractmethod
    def save(self, job_id: str, name: str, source: bytes | BinaryIO) -> int:
        """Store `source` (bytes, or a binary stream read to its end) and return its size."""

    @abstractmethod
    def open(self, job_id: str, name: str) -> BinaryIO:
        """Open a stored file for reading; raises FileNotFoundError when there is none."""

    @abstractmethod
    def delete_job(self, job_id: str) -> None:
        """Remove every file of a job; does nothing when it has none."""

    @abstractmethod
    def job_ids(self) -> list[str]:
        """Return the ids of the jobs that have files, for cleaning up after a crash."""
