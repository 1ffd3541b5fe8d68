"""Job control over HTTP: cancel, long-poll, Prefer: wait, idempotency, backpressure, retention."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import requests

from queueing.jobs import new_job_id
from tests.conftest import HANG_GUARD, LiveService
from tests.support import ManualClock
from tests.test_api import assert_problem

LONG = 600  # seconds a `delay` job would take if nothing stopped it


def running(service: LiveService, job_id: str) -> dict[str, Any]:
    """Long-poll until the job has started and return its document."""
    document = service.get(f"/jobs/{job_id}").json()
    while document["status"] == "queued":
        document = service.get(f"/jobs/{job_id}", params={"wait": 10}).json()
    return document


# Cancel and delete -------------------------------------------------------------------------------


def test_cancel_queued_job_ends_it_at_once(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 1}).json()
    response = service.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "canceled"
    assert response.json()["cancel_requested"] is True


def test_cancel_running_job_stops_it_at_next_step(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": LONG}).json()
    running(service, job["id"])
    response = service.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    finished = service.wait_until_finished(job["id"])
    assert finished["status"] == "canceled"
    assert finished["error"] is None


def test_cancel_finished_job_is_409_and_changes_nothing(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    other = service.post("/jobs/delay", json={"seconds": LONG}).json()
    before = service.wait_until_finished(job["id"])
    body = assert_problem(service.post(f"/jobs/{job['id']}/cancel"), 409)
    assert body["job_status"] == "succeeded"
    assert service.get(f"/jobs/{job['id']}").json() == before
    assert service.get(f"/jobs/{other['id']}").json()["cancel_requested"] is False


def test_delete_finished_job_removes_it(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    service.wait_until_finished(job["id"])
    assert service.delete(f"/jobs/{job['id']}").status_code == 204
    assert_problem(service.get(f"/jobs/{job['id']}"), 404)


def test_delete_unfinished_job_is_409(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": LONG}).json()
    body = assert_problem(service.delete(f"/jobs/{job['id']}"), 409)
    assert "cancel it first" in body["detail"]


# Waiting ------------------------------------------------------------------------------------------


def test_long_poll_answers_when_status_changes(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 1}).json()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(service.get, f"/jobs/{job['id']}", params={"wait": 20})
        # The cancel happens while the poll waits, or before it started. Either way the poll
        # must return the canceled document, long before its 20 s run out.
        service.post(f"/jobs/{job['id']}/cancel")
        response = poll.result(HANG_GUARD)
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"


def test_long_poll_on_finished_job_answers_at_once(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    finished = service.wait_until_finished(job["id"])
    assert service.get(f"/jobs/{job['id']}", params={"wait": 30}).json() == finished


def test_long_poll_rejects_bad_wait(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    for value in ("-1", "soon", "nan"):
        assert_problem(service.get(f"/jobs/{job['id']}", params={"wait": value}), 400, field="wait")


def test_prefer_wait_returns_finished_job_with_200(service: LiveService) -> None:
    response = service.post("/jobs/delay", json={"seconds": 0.05}, headers={"Prefer": "wait=20"})
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.headers["Preference-Applied"] == "wait=20"
    assert response.headers["Location"] == f"/jobs/{response.json()['id']}"


def test_prefer_wait_for_long_job_answers_202(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"server": {"long_poll_max_seconds": 0.2}})
    response = service.post("/jobs/delay", json={"seconds": LONG}, headers={"Prefer": "wait=5"})
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=0.2"


def test_long_poll_flood_never_blocks_submit_or_read(
    start_service: Callable[..., LiveService],
) -> None:
    # No workers: the waited-on job stays queued, so nothing wakes the held polls early.
    service = start_service(
        {"server": {"max_waiting_requests": 2, "threads": 8}, "workers": {"threads": 0}}
    )
    slow = service.post("/jobs/delay", json={"seconds": LONG}).json()
    url = f"{service.url}/jobs/{slow['id']}"
    with ThreadPoolExecutor(6) as pool:
        flood = [
            pool.submit(requests.get, url, params={"wait": 20}, timeout=HANG_GUARD)
            for _ in range(6)
        ]
        # Two polls get the two slots and stay; the other four are refused at once.
        refused = []
        for future in as_completed(flood):
            refused.append(future.result())
            if len(refused) == 4:
                break
        for response in refused:
            assert_problem(response, 503)
            assert int(response.headers["Retry-After"]) >= 1
        held = [future for future in flood if not future.done()]
        assert len(held) == 2

        submit = service.post("/jobs/delay", json={"seconds": 0})
        read = service.get(f"/jobs/{slow['id']}")
        prefer = service.post("/jobs/delay", json={"seconds": 0}, headers={"Prefer": "wait=5"})
        assert submit.status_code == 202
        assert read.status_code == 200
        assert prefer.status_code == 202
        assert "Preference-Applied" not in prefer.headers

        service.post(f"/jobs/{slow['id']}/cancel")
        for future in held:
            response = future.result(HANG_GUARD)
            assert response.status_code == 200
            assert response.json()["status"] == "canceled"


# Idempotency --------------------------------------------------------------------------------------


def test_same_key_same_content_replays_first_job(service: LiveService) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = service.post("/jobs/delay", json={"seconds": 0}, headers=headers)
    again = service.post("/jobs/delay", json={"seconds": 0}, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(service.get("/jobs").json()["jobs"]) == 1


def test_same_key_other_content_is_422(service: LiveService) -> None:
    headers = {"Idempotency-Key": "order-18"}
    service.post("/jobs/delay", json={"seconds": 0}, headers=headers)
    response = service.post("/jobs/delay", json={"seconds": 1}, headers=headers)
    assert_problem(response, 422, field="Idempotency-Key")


def test_same_key_multipart_compares_file_content(service: LiveService, shared_data: Any) -> None:
    headers = {"Idempotency-Key": "upload-1"}
    data = (shared_data / "csv" / "messy" / "ragged.csv").read_bytes()
    first = service.post("/jobs/csv-profile", files={"file": ("a.csv", data)}, headers=headers)
    again = service.post("/jobs/csv-profile", files={"file": ("a.csv", data)}, headers=headers)
    other = service.post(
        "/jobs/csv-profile", files={"file": ("a.csv", data + b"5,Rome,9\n")}, headers=headers
    )
    assert first.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert_problem(other, 422, field="Idempotency-Key")


def test_prefer_wait_replay_keeps_original_status(service: LiveService) -> None:
    headers = {"Idempotency-Key": "waited-1", "Prefer": "wait=20"}
    first = service.post("/jobs/delay", json={"seconds": 0}, headers=headers)
    again = service.post("/jobs/delay", json={"seconds": 0}, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_concurrent_requests_with_one_key_create_one_job(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"server": {"threads": 8}})
    barrier = threading.Barrier(8)

    def submit() -> requests.Response:
        barrier.wait(HANG_GUARD)
        return requests.post(
            f"{service.url}/jobs/delay",
            json={"seconds": 0},
            headers={"Idempotency-Key": "burst"},
            timeout=HANG_GUARD,
        )

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: submit(), range(8)))
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(accepted) == 1
    assert {r.status_code for r in responses} <= {202, 409}
    assert len(service.get("/jobs").json()["jobs"]) == 1


# Backpressure and retention ----------------------------------------------------------------------


def test_burst_past_max_size_gets_503_and_every_202_job_ends(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"queue": {"max_size": 5}, "workers": {"threads": 1}})
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda _: requests.post(
                    f"{service.url}/jobs/delay", json={"seconds": 0.01}, timeout=HANG_GUARD
                ),
                range(40),
            )
        )
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert accepted
    assert refused
    for response in refused:
        assert_problem(response, 503)
        assert int(response.headers["Retry-After"]) >= 1
    for job_id in accepted:
        assert service.wait_until_finished(job_id)["status"] == "succeeded"
    listed = service.get("/jobs", params={"limit": 100}).json()["jobs"]
    assert sorted(job["id"] for job in listed) == sorted(accepted)


def test_retention_purges_finished_jobs_and_answers_410(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"jobs": {"retention_seconds": 60}})
    clock = ManualClock(service.runtime.service.clock.now())
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    service.wait_until_finished(job["id"])
    runtime = service.runtime
    runtime.service.clock = clock
    clock.advance(61)
    assert runtime.service.purge_expired() == 1
    assert_problem(service.get(f"/jobs/{job['id']}"), 410)
    assert_problem(service.get(f"/jobs/{job['id']}/result"), 410)


# Timeouts and retries -----------------------------------------------------------------------------


def test_timeout_fails_job_and_other_jobs_keep_running(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"jobs": {"timeouts": {"delay": 0.3}}, "workers": {"threads": 1}})
    slow = service.post("/jobs/delay", json={"seconds": LONG}).json()
    quick = service.post("/jobs/delay", json={"seconds": 0}).json()
    finished = service.wait_until_finished(slow["id"])
    assert finished["status"] == "failed"
    assert finished["error"]["type"] == "timeout"
    assert finished["attempt"] == 1
    assert service.wait_until_finished(quick["id"])["status"] == "succeeded"


def test_failing_job_is_retried_then_fails_with_every_attempt(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"jobs": {"max_attempts": 3, "retry_backoff_seconds": 0.01}})
    job = service.post("/jobs/delay", json={"seconds": 0, "fail": True}).json()
    finished = service.wait_until_finished(job["id"])
    assert finished["status"] == "failed"
    assert finished["attempt"] == 3
    assert [a["number"] for a in finished["attempts"]] == [1, 2, 3]
    assert all(a["error"]["type"] == "handler_error" for a in finished["attempts"])
    assert "after 3 attempts" in finished["error"]["message"]


# Events ----------------------------------------------------------------------------------------


def test_event_stream_sends_status_progress_and_end(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0.2}).json()
    events: list[tuple[str, int]] = []
    with service.http.get(
        f"{service.url}/jobs/{job['id']}/events", stream=True, timeout=HANG_GUARD
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name, event_id = "", 0
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line == "" and name:
                events.append((name, event_id))
                name = ""
    names = [name for name, _ in events]
    assert names[0] == "status"
    assert names[-1] == "end"
    assert "progress" in names
    versions = [version for _, version in events]
    assert versions == sorted(versions)


# Authentication ----------------------------------------------------------------------------------


def test_api_keys_guard_jobs_and_scope_them(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"auth": {"keys": ["key-a", "key-b"]}})
    assert service.get("/health").status_code == 200
    missing = service.post("/jobs/delay", json={"seconds": 0})
    assert_problem(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(service.get("/nowhere"), 401)
    wrong = service.get("/jobs", headers={"Authorization": "Bearer key-c"})
    assert_problem(wrong, 401)
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    job = service.post("/jobs/delay", json={"seconds": 0}, headers=a).json()
    assert service.get(f"/jobs/{job['id']}", headers=a).status_code == 200
    assert_problem(service.get(f"/jobs/{job['id']}", headers=b), 404)
    assert service.get("/jobs", headers=b).json()["jobs"] == []


def test_key_still_being_accepted_answers_409(service: LiveService) -> None:
    # Hold the key the way a first request does while its upload is stored.
    store = service.runtime.service.store
    assert store.claim_idempotency_key(None, "slow-upload") is None
    response = service.post(
        "/jobs/delay", json={"seconds": 0}, headers={"Idempotency-Key": "slow-upload"}
    )
    assert_problem(response, 409)
    assert response.headers["Retry-After"] == "1"
    store.release_idempotency_key(None, "slow-upload")
    again = service.post(
        "/jobs/delay", json={"seconds": 0}, headers={"Idempotency-Key": "slow-upload"}
    )
    assert again.status_code == 202


def test_files_without_a_record_are_removed_once_old(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"workers": {"threads": 0}})
    runtime = service.runtime.service
    now = runtime.clock.now()
    old_orphan = new_job_id(now - 2 * 3600)
    young_orphan = new_job_id(now - 60)
    for job_id in (old_orphan, young_orphan):
        runtime.files.save(job_id, "upload", b"left behind by a crash")
    kept = service.post("/jobs/csv-profile", json={"csv": "a\n1\n"}).json()["id"]
    assert runtime.remove_orphan_files() == 1
    assert sorted(runtime.files.job_ids()) == sorted([young_orphan, kept])
