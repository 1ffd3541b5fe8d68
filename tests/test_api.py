"""The HTTP contract, end to end: the real app under waitress, spoken to over HTTP."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queueing.jobs import new_job_id
from tests.conftest import LiveService

EXTENSIONS = {"handlers": {"modules": ["tests.jobtypes"]}}
PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, *, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert [error["field"] for error in body["errors"]] == [field]
        assert body["errors"][0]["message"]
    return body


def stored_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "var" / "jobs"
    return sorted(folder.rglob("*")) if folder.exists() else []


# Submitting --------------------------------------------------------------------------------------


def test_submit_answers_202_with_location_and_job(service: LiveService) -> None:
    response = service.post("/jobs/delay", json={"seconds": 0})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    assert job["type"] == "delay"
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["links"]["self"] == f"/jobs/{job['id']}"
    expected = {
        "id",
        "type",
        "status",
        "version",
        "created_at",
        "started_at",
        "finished_at",
        "next_attempt_at",
        "attempt",
        "attempts",
        "cancel_requested",
        "progress",
        "eta",
        "handlers",
        "error",
        "links",
    }
    assert set(job) == expected


def test_status_exists_right_after_202(start_service: Callable[..., LiveService]) -> None:
    # No workers: the job stays queued, and its record must already be there.
    service = start_service({"workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    response = service.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert int(response.headers["Retry-After"]) >= 1


def test_job_runs_to_success_and_serves_result(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0.1}).json()
    finished = service.wait_until_finished(job["id"])
    assert finished["status"] == "succeeded"
    assert finished["attempt"] == 1
    assert finished["progress"]["fraction"] == 1.0
    assert finished["handlers"] == [{"name": "wait", "status": "succeeded", "error": None}]
    response = service.get(f"/jobs/{job['id']}/result")
    assert response.status_code == 200
    assert response.json() == {"waited_seconds": 0.1}
    assert "Retry-After" not in service.get(f"/jobs/{job['id']}").headers


def test_result_file_is_served_by_its_listed_name(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service(EXTENSIONS)
    job = service.post("/jobs/echo", json={"text": "hello"}).json()
    service.wait_until_finished(job["id"])
    result = service.get(f"/jobs/{job['id']}/result").json()
    response = service.get(result["url"])
    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("name", ["upload", "..", "missing.txt", "..%2Fecho.txt", ".hidden"])
def test_file_not_listed_in_result_is_404(
    start_service: Callable[..., LiveService], name: str
) -> None:
    service = start_service(EXTENSIONS)
    job = service.post("/jobs/echo", json={"text": "hello"}).json()
    service.wait_until_finished(job["id"])
    assert_problem(service.get(f"/jobs/{job['id']}/files/{name}"), 404)


def test_result_of_unfinished_job_is_409(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    body = assert_problem(service.get(f"/jobs/{job['id']}/result"), 409)
    assert body["job_status"] == "queued"
    assert body["job_error"] is None


def test_result_of_failed_job_is_409_with_error(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"jobs": {"max_attempts": 1}})
    job = service.post("/jobs/delay", json={"seconds": 0, "fail": True}).json()
    assert service.wait_until_finished(job["id"])["status"] == "failed"
    body = assert_problem(service.get(f"/jobs/{job['id']}/result"), 409)
    assert body["job_status"] == "failed"
    assert body["job_error"]["type"] == "handler_error"
    assert "failed on request" in body["job_error"]["message"]


# Rejected submits leave nothing behind ------------------------------------------------------------


def test_unknown_type_is_404_with_known_types(service: LiveService) -> None:
    body = assert_problem(service.post("/jobs/nope", json={}), 404)
    assert body["known_types"] == ["csv-profile", "delay", "thumbnails"]


def test_malformed_json_is_400(service: LiveService) -> None:
    response = service.post(
        "/jobs/delay", data=b'{"seconds": ', headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 400)
    assert "not valid JSON" in body["detail"]


def test_json_that_is_not_an_object_is_422(service: LiveService) -> None:
    assert_problem(service.post("/jobs/delay", json=[1, 2]), 422, field="(body)")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "seconds"),
        ({"seconds": "soon"}, "seconds"),
        ({"seconds": -1}, "seconds"),
        ({"seconds": 1, "fail": "yes"}, "fail"),
        ({"seconds": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_field_is_422_naming_it(
    service: LiveService, tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    assert_problem(service.post("/jobs/delay", json=body), 422, field=field)
    assert service.get("/jobs").json()["jobs"] == []


def test_wrong_content_type_is_415(service: LiveService) -> None:
    body = assert_problem(
        service.post("/jobs/delay", data=b"seconds=1", headers={"Content-Type": "text/plain"}),
        415,
    )
    assert "application/json" in body["detail"]
    body = assert_problem(service.post("/jobs/thumbnails", json={"image": "x"}), 415)
    assert "multipart/form-data" in body["detail"]


def test_body_over_max_bytes_is_413_and_leaves_nothing(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    service = start_service({"uploads": {"max_bytes": 1000}})
    response = service.post(
        "/jobs/csv-profile", files={"file": ("big.csv", b"a,b\n" + b"1,2\n" * 500)}
    )
    body = assert_problem(response, 413)
    assert "1000" in body["detail"]
    assert service.get("/jobs").json()["jobs"] == []
    assert stored_files(tmp_path) == []


def test_rejected_upload_leaves_no_file(service: LiveService, tmp_path: Path) -> None:
    response = service.post("/jobs/thumbnails", files={"image": ("a.png", b"not an image")})
    assert_problem(response, 422, field="image")
    assert stored_files(tmp_path) == []
    assert service.get("/jobs").json()["jobs"] == []


# Reading jobs ------------------------------------------------------------------------------------


def test_unknown_and_malformed_ids_are_404(service: LiveService) -> None:
    assert_problem(service.get(f"/jobs/{new_job_id(service.runtime.service.clock.now())}"), 404)
    assert_problem(service.get("/jobs/not-a-job-id"), 404)
    assert_problem(service.get("/jobs/not-a-job-id/result"), 404)


def test_id_older_than_retention_is_410(service: LiveService) -> None:
    old = new_job_id(service.runtime.service.clock.now() - 2 * 86400)
    body = assert_problem(service.get(f"/jobs/{old}"), 410)
    assert "retention" in body["detail"]


def test_unknown_route_and_method_are_problems(service: LiveService) -> None:
    assert_problem(service.get("/nowhere"), 404)
    response = service.delete("/jobs")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_health_reports_queue_workers_and_backend(service: LiveService) -> None:
    response = service.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["role"] == "web+worker"
    assert body["queue_depth"] == 0
    assert body["workers"] == {"alive": 4, "busy": 0, "abandoned": 0}
    assert body["backend"] == {"name": "memory", "reachable": True}


def test_web_only_role_in_health(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    assert service.get("/health").json()["role"] == "web"


def test_listing_pages_newest_first_with_cursor(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    ids = [service.post("/jobs/delay", json={"seconds": 0}).json()["id"] for _ in range(5)]
    first = service.get("/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:2]
    second = service.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [job["id"] for job in second["jobs"]] == ids[::-1][2:4]
    third = service.get("/jobs", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [job["id"] for job in third["jobs"]] == ids[:1]
    assert third["next_cursor"] is None


def test_listing_filters_by_status_and_type(start_service: Callable[..., LiveService]) -> None:
    service = start_service({"workers": {"threads": 0}})
    kept = service.post("/jobs/delay", json={"seconds": 0}).json()["id"]
    dropped = service.post("/jobs/delay", json={"seconds": 0}).json()["id"]
    service.post(f"/jobs/{dropped}/cancel")
    queued = service.get("/jobs", params={"status": "queued", "type": "delay"}).json()
    assert [job["id"] for job in queued["jobs"]] == [kept]
    canceled = service.get("/jobs", params={"status": "canceled"}).json()
    assert [job["id"] for job in canceled["jobs"]] == [dropped]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"status": "done"}, "status"),
        ({"type": "nope"}, "type"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"sort": "asc"}, "sort"),
    ],
)
def test_listing_rejects_bad_parameters(
    service: LiveService, params: dict[str, str], name: str
) -> None:
    assert_problem(service.get("/jobs", params=params), 400, field=name)


# Hostile requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"seconds": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,
        b'{"seconds": 1',
        b"\xff\xfe{}",
    ],
)
def test_hostile_json_is_400_not_500(service: LiveService, body: bytes) -> None:
    response = service.post("/jobs/delay", data=body, headers={"Content-Type": "application/json"})
    assert_problem(response, 400)


def test_duplicate_json_key_is_422(service: LiveService) -> None:
    response = service.post(
        "/jobs/delay",
        data=b'{"seconds": "x", "seconds": 0}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 422, field="seconds")


def test_non_ascii_digits_are_rejected_not_500(service: LiveService) -> None:
    assert_problem(service.get("/jobs", params={"limit": "²"}), 400, field="limit")


def test_odd_last_event_id_starts_stream_from_scratch(service: LiveService) -> None:
    job = service.post("/jobs/delay", json={"seconds": 0}).json()
    service.wait_until_finished(job["id"])
    connection = http.client.HTTPConnection("127.0.0.1", service.server.port, timeout=30)
    try:
        connection.putrequest("GET", f"/jobs/{job['id']}/events")
        connection.putheader("Last-Event-ID", "\xb2")  # sent as one Latin-1 byte
        connection.endheaders()
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200
    assert "event: status" in text
    assert "event: end" in text


def test_head_on_event_stream_frees_its_slot(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"server": {"max_waiting_requests": 1}, "workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 1}).json()
    for _ in range(3):
        assert service.http.head(f"{service.url}/jobs/{job['id']}/events").status_code == 200
    # The one slot is free again: a short long-poll gets it instead of a 503.
    assert service.get(f"/jobs/{job['id']}", params={"wait": 0.01}).status_code == 200


def test_dropped_event_stream_frees_its_slot(
    start_service: Callable[..., LiveService],
) -> None:
    service = start_service({"server": {"max_waiting_requests": 1}, "workers": {"threads": 0}})
    job = service.post("/jobs/delay", json={"seconds": 1}).json()
    with socket.create_connection(("127.0.0.1", service.server.port)) as client:
        client.sendall(f"GET /jobs/{job['id']}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while b"event: status" not in received:
            chunk = client.recv(4096)
            assert chunk, "the stream closed before its first event"
            received += chunk
        assert_problem(service.get(f"/jobs/{job['id']}", params={"wait": 0.01}), 503)
    # The stream notices the closed connection within about a second and frees its slot.
    response = service.get(f"/jobs/{job['id']}", params={"wait": 0.01})
    while response.status_code == 503:
        response = service.get(f"/jobs/{job['id']}", params={"wait": 0.2})
    assert response.status_code == 200


def test_prefer_wait_with_parameters_is_applied(service: LiveService) -> None:
    response = service.post(
        "/jobs/delay", json={"seconds": 0}, headers={"Prefer": "wait=20;foo, respond-async"}
    )
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=20"
