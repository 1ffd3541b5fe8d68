"""The local file store's path safety, and the job document's fields and timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from queueing import transitions
from queueing.documents import job_document, rfc3339
from queueing.files import is_valid_file_name
from queueing.jobs import JobIdGenerator, job_id_time, new_job_id
from queueing.local_files import LocalFileStore

NOW = 1_800_000_000.0


@pytest.mark.parametrize("name", ["thumbnail-128.jpg", "a", "profile_1.json", "A.B-c"])
def test_plain_file_names_are_valid(name: str) -> None:
    assert is_valid_file_name(name)


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "a/b", "../upload", "a\\b", "x..y", "é.png", "a" * 129]
)
def test_path_like_file_names_are_invalid(name: str) -> None:
    assert not is_valid_file_name(name)


def test_saved_file_reads_back_and_deletes(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    job_id = new_job_id(NOW)
    assert store.save(job_id, "upload", b"hello") == 5
    with store.open(job_id, "upload") as handle:
        assert handle.read() == b"hello"
    assert store.job_ids() == [job_id]
    store.delete_job(job_id)
    assert store.job_ids() == []
    with pytest.raises(FileNotFoundError):
        store.open(job_id, "upload")


def test_unsafe_names_never_reach_the_disk(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "data")
    with pytest.raises(ValueError, match="invalid file name"):
        store.save(new_job_id(NOW), "../escape", b"x")
    with pytest.raises(FileNotFoundError):
        store.save("../../etc", "upload", b"x")
    assert not (tmp_path / "escape").exists()
    assert list(tmp_path.rglob("*")) == []


def test_saving_again_replaces_the_file(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    job_id = new_job_id(NOW)
    store.save(job_id, "out.txt", b"first")
    store.save(job_id, "out.txt", b"second")
    with store.open(job_id, "out.txt") as handle:
        assert handle.read() == b"second"
    assert sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir()) == ["out.txt"]


def test_job_ids_encode_their_creation_time() -> None:
    job_id = new_job_id(NOW)
    assert job_id[14] == "7"
    assert job_id_time(job_id) == NOW
    assert job_id_time("not-an-id") is None
    assert job_id_time(job_id.upper()) is None


def test_generated_ids_sort_in_creation_order() -> None:
    generator = JobIdGenerator()
    ids = [generator.new(NOW) for _ in range(5000)]  # one millisecond, then spilling over
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(NOW + 0.1234) == "2027-01-15T08:00:00.123Z"
    assert rfc3339(None) is None


def test_document_of_new_job_has_every_member() -> None:
    job = transitions.new_job(new_job_id(NOW), "delay", ["wait"], NOW)
    document = job_document(job)
    assert document["status"] == "queued"
    assert document["attempt"] == 0
    assert document["progress"] == {"done": 0, "total": None, "fraction": None, "message": None}
    assert document["handlers"] == [{"name": "wait", "status": "queued", "error": None}]
    assert document["links"]["events"] == f"/jobs/{job.id}/events"
    assert document["created_at"] == "2027-01-15T08:00:00.000Z"
