"""Backburner's HTTP API (Flask, served by waitress) and its command line.

`create_app(container)` builds the Flask app from an application container; `main()` is the
`backburner` console script. This is the only module that imports Flask or configures logging.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import logging.handlers
import mimetypes
import os
import queue
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

import waitress
from flask import Flask, Response, g, request, send_file
from PIL import Image
from waitress import wasyncore
from werkzeug.exceptions import HTTPException

from client import add_client_commands, run_client_command
from containers.application import ApplicationContainer, build_container
from containers.settings import load_settings
from handlers.registry import ContentKind, Intake, Registry, Submission, UploadedFile
from queueing.documents import EncodedDocuments, job_document
from queueing.errors import (
    BackburnerError,
    BackendUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    JobExpired,
    JobNotFound,
    JobStateConflict,
    MalformedRequest,
    PayloadTooLarge,
    QueueFull,
    SettingsError,
    ShuttingDown,
    UnknownJobType,
    UnsupportedContent,
    WaitSlotsExhausted,
)
from queueing.files import is_valid_file_name
from queueing.jobs import Job, JobQuery, JobStatus, job_id_time
from queueing.service import DISCONNECT_CHECK_SECONDS, Housekeeper, JobService, WaitSlot
from queueing.transitions import new_job
from queueing.workers import WorkerPool

logger = logging.getLogger("backburner")

EXTENSION = "backburner"
PROBLEM_TYPE = "urn:backburner:problem:"
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
SSE_KEEPALIVE_SECONDS = 15.0
# waitress refuses bodies past this on its own, with a plain-text 413, as a backstop behind
# the app's own Content-Length check (multipart framing adds a little to the upload itself).
WAITRESS_BODY_SLACK = 1024 * 1024
WAITRESS_REQUEST_LOOKAHEAD = 4  # pipelined requests waitress buffers per connection


@dataclass
class Runtime:
    """The background machinery of one process, reached through `app.extensions`."""

    container: ApplicationContainer
    service: JobService
    registry: Registry
    pool: WorkerPool | None
    housekeeper: Housekeeper
    settings: Mapping[str, Any]

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        self.housekeeper.start()

    def shutdown(self) -> None:
        """Stop accepting jobs, give running ones the grace period, then stop them."""
        self.service.stop_accepting()
        grace = self.settings["shutdown"]["grace_seconds"]
        logger.info("Shutting down: rejecting new jobs, giving running jobs %g s.", grace)
        if self.pool is not None:
            self.pool.stop(grace)
        self.housekeeper.stop()
        self.service.store.close()


# Problems (RFC 9457) ---------------------------------------------------------------------------


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
    **members: Any,
) -> Response:
    body = {
        "type": PROBLEM_TYPE + kind if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **members,
    }
    response = Response(json.dumps(body), status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _field_problem(status: int, title: str, kind: str, field: str, message: str) -> Response:
    errors = [{"field": field, "message": message}]
    return problem(status, title, f"{field}: {message}", kind=kind, errors=errors)


def register_error_handlers(app: Flask, runtime: Runtime) -> None:
    service = runtime.service

    @app.errorhandler(UnknownJobType)
    def unknown_type(error: UnknownJobType) -> Response:
        return problem(
            404, "Unknown job type", str(error), kind="unknown-job-type", known_types=error.known
        )

    @app.errorhandler(InvalidInput)
    def invalid_input(error: InvalidInput) -> Response:
        return _field_problem(422, "Invalid input", "invalid-input", error.field, error.message)

    @app.errorhandler(UnsupportedContent)
    def unsupported(error: UnsupportedContent) -> Response:
        return problem(415, "Unsupported content type", str(error), kind="unsupported-content")

    @app.errorhandler(MalformedRequest)
    def malformed(error: MalformedRequest) -> Response:
        return problem(400, "Malformed request", str(error), kind="malformed-request")

    @app.errorhandler(PayloadTooLarge)
    def too_large(error: PayloadTooLarge) -> Response:
        return problem(413, "Request body too large", str(error), kind="payload-too-large")

    @app.errorhandler(QueueFull)
    def queue_full(error: QueueFull) -> Response:
        seconds = service.retry_after_backlog()
        return problem(
            503,
            "Queue full",
            f"{error}; try again later",
            kind="queue-full",
            headers={"Retry-After": str(seconds)},
        )

    @app.errorhandler(ShuttingDown)
    def shutting_down(error: ShuttingDown) -> Response:
        return problem(
            503, "Shutting down", str(error), kind="shutting-down", headers={"Retry-After": "5"}
        )

    @app.errorhandler(WaitSlotsExhausted)
    def no_wait_slot(error: WaitSlotsExhausted) -> Response:
        detail = f"{error}; poll without wait, or try again shortly"
        return problem(
            503,
            "Too many waiting requests",
            detail,
            kind="wait-slots-exhausted",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(JobNotFound)
    def not_found(error: JobNotFound) -> Response:
        return problem(404, "Job not found", str(error), kind="job-not-found")

    @app.errorhandler(JobExpired)
    def expired(error: JobExpired) -> Response:
        return problem(410, "Job purged", str(error), kind="job-expired")

    @app.errorhandler(JobStateConflict)
    def conflict(error: JobStateConflict) -> Response:
        return problem(
            409,
            "Job state conflict",
            str(error),
            kind="job-state-conflict",
            job_status=error.status,
        )

    @app.errorhandler(IdempotencyKeyReused)
    def key_reused(error: IdempotencyKeyReused) -> Response:
        return _field_problem(
            422, "Idempotency key reused", "idempotency-key-reused", "Idempotency-Key", str(error)
        )

    @app.errorhandler(IdempotencyKeyInFlight)
    def key_in_flight(error: IdempotencyKeyInFlight) -> Response:
        return problem(
            409,
            "Idempotent request in progress",
            str(error),
            kind="idempotency-key-in-flight",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        detail = error.description or error.name
        if code == 404:
            detail = f"no endpoint at {request.path}; the README lists the endpoints"
        elif code == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        elif code == 413:
            limit = runtime.settings["uploads"]["max_bytes"]
            detail = f"the request body is larger than uploads.max_bytes ({limit} bytes)"
        response = problem(code, error.name, detail)
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(BackburnerError)
    def other_error(error: BackburnerError) -> Response:
        logger.error("Request %s %s failed: %s", request.method, request.path, error)
        return problem(
            503, "Service unavailable", str(error), kind="unavailable", headers={"Retry-After": "5"}
        )

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        logger.exception("Request %s %s raised.", request.method, request.path)
        return problem(
            500,
            "Internal server error",
            "the server failed to handle the request; its log has the details",
        )


# Requests ----------------------------------------------------------------------------------------


def content_kind() -> ContentKind | None:
    mimetype = request.mimetype
    if mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        return "json"
    if mimetype == "multipart/form-data":
        return "multipart"
    return None


def read_submission(kind: ContentKind) -> Submission:
    """Turn the request body into a framework-free Submission; raises 400 or 422 errors."""
    if kind == "json":
        raw = request.get_data(cache=False)
        try:
            body = json.loads(raw, object_pairs_hook=_without_duplicate_keys)
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer too long
        # to convert; a RecursionError comes from arrays nested thousands deep.
        except (ValueError, RecursionError) as error:
            raise MalformedRequest(f"the body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise InvalidInput("(body)", 'must be a JSON object, e.g. {"seconds": 1}')
        return Submission("json", json=body)

    fields: dict[str, str] = {}
    for name in request.form:
        values = request.form.getlist(name)
        if len(values) > 1:
            raise InvalidInput(name, "sent more than once; send each field once")
        fields[name] = values[0]
    files: dict[str, UploadedFile] = {}
    for name in request.files:
        parts = request.files.getlist(name)
        if len(parts) > 1 or name in fields:
            raise InvalidInput(name, "sent more than once; send each field once")
        part = parts[0]
        files[name] = UploadedFile(name, part.filename, part.stream)  # type: ignore[arg-type]
    return Submission("multipart", fields=fields, files=files)


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidInput(key, "sent more than once; send each field once")
        found[key] = value
    return found


def submission_digest(job_type: str, submission: Submission) -> str:
    """Return a digest of a request's content: its fields and a hash of each file.

    The raw multipart bytes are never hashed, because their boundary differs on every request.
    """
    outer = hashlib.sha256(job_type.encode())
    if submission.content == "json":
        outer.update(json.dumps(submission.json, sort_keys=True).encode())
    else:
        outer.update(json.dumps(sorted(submission.fields.items())).encode())
        for name in sorted(submission.files):
            stream = submission.files[name].stream
            inner = hashlib.sha256()
            while chunk := stream.read(1024 * 1024):
                inner.update(chunk)
            stream.seek(0)
            outer.update(name.encode() + b"\0" + inner.digest())
    return outer.hexdigest()


def parse_wait(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # also rejects NaN
        raise BadParameter(name, f"must be a number of seconds, 0 or more; got {value!r}")
    return seconds


def parse_prefer_wait(header: str | None) -> float | None:
    # RFC 7240: preferences a server cannot understand are ignored, never an error.
    for preference in (header or "").split(","):
        token = preference.split(";", 1)[0]  # parameters after ";" do not change the wait
        name, _, value = token.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None


class BadParameter(MalformedRequest):
    """Raised when a query parameter or header of a request is invalid."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        job_id = ""
    if job_id_time(job_id) is None:
        raise BadParameter("cursor", "is not a cursor this service returned")
    return job_id


# The app -----------------------------------------------------------------------------------------


def create_app(container: ApplicationContainer) -> Flask:
    """Build the Flask app on a container; `app.extensions["backburner"]` is the Runtime.

    Nothing starts here: `Runtime.start()` starts the worker threads and housekeeping.
    """
    settings = container.config()
    workers = settings["workers"]["threads"]
    runtime = Runtime(
        container=container,
        service=container.job_service(),
        registry=container.registry(),
        pool=container.worker_pool() if workers > 0 else None,
        housekeeper=Housekeeper(
            container.job_service(),
            interval=min(60.0, max(1.0, settings["jobs"]["retention_seconds"] / 10)),
        ),
        settings=settings,
    )
    app = Flask("backburner")
    max_bytes = settings["uploads"]["max_bytes"]
    app.config.update(MAX_CONTENT_LENGTH=max_bytes, MAX_FORM_MEMORY_SIZE=max_bytes)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = runtime
    register_error_handlers(app, runtime)
    register_access_control(app, settings)
    register_job_routes(app, runtime)
    return app


# Authentication and CORS -----------------------------------------------------------------------

OPEN_PATHS = frozenset({"/health", "/openapi.json"})
EXPOSED_HEADERS = "Location, Retry-After, Idempotent-Replayed, Preference-Applied"


def register_access_control(app: Flask, settings: Mapping[str, Any]) -> None:
    keys = [key.encode() for key in settings["auth"]["keys"]]
    open_paths = set(OPEN_PATHS)
    if settings["auth"]["open_metrics"]:
        open_paths.add("/metrics")
    origins = set(settings["server"]["cors_origins"])

    @app.before_request
    def authenticate() -> Response | None:
        # Runs before the route is dispatched, so an unknown route without a key is a 401 too.
        g.owner = None
        if not keys or request.method == "OPTIONS" or request.path in open_paths:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        candidate = token.strip().encode()
        if scheme.lower() == "bearer" and candidate:
            for key in keys:
                if hmac.compare_digest(candidate, key):
                    g.owner = owner_of(key.decode())
                    return None
        detail = "send a valid API key as 'Authorization: Bearer <key>'"
        return problem(
            401,
            "Unauthorized",
            detail,
            kind="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="backburner"'},
        )

    @app.after_request
    def allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and (origin in origins or "*" in origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.vary.add("Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = (
                    "Authorization, Content-Type, Idempotency-Key, Prefer, Last-Event-ID"
                )
                response.headers["Access-Control-Max-Age"] = "600"
        return response


# Job routes --------------------------------------------------------------------------------------


def register_job_routes(app: Flask, runtime: Runtime) -> None:  # noqa: PLR0915
    service = runtime.service
    registry = runtime.registry
    settings = runtime.settings
    max_bytes = settings["uploads"]["max_bytes"]

    # Clients poll unchanged jobs often, so each version of a document is encoded once.
    documents = EncodedDocuments()

    def send_job(job: Job, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        response = Response(documents.encode(job), status, mimetype="application/json")
        if not job.status.is_final:
            response.headers["Retry-After"] = str(service.retry_after(job))
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    @app.post("/jobs/<job_type>")
    def submit(job_type: str) -> Response:
        kind_of_job = registry.get(job_type)
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(
                f"the request body has {length} bytes; uploads.max_bytes allows {max_bytes}"
            )
        kind = content_kind()
        if kind is None or kind not in kind_of_job.accepts:
            takes = " or ".join(
                "application/json" if k == "json" else "multipart/form-data"
                for k in sorted(kind_of_job.accepts)
            )
            sent = request.mimetype or "no Content-Type"
            raise UnsupportedContent(f"job type {job_type} takes {takes}, not {sent}")
        submission = read_submission(kind)

        owner = g.owner
        key = request.headers.get("Idempotency-Key")
        digest: str | None = None
        if key is not None:
            if not 1 <= len(key) <= 255 or not key.isprintable():
                raise BadParameter("Idempotency-Key", "must be 1 to 255 printable characters")
            digest = submission_digest(job_type, submission)
            earlier = service.store.claim_idempotency_key(owner, key)
            if earlier is not None:
                if earlier.request_digest != digest:
                    raise IdempotencyKeyReused(
                        f"Idempotency-Key {key!r} was first used for a different request; "
                        "use a new key for new content"
                    )
                return send_job(
                    earlier,
                    earlier.accepted_status,
                    {"Location": f"/jobs/{earlier.id}", "Idempotent-Replayed": "true"},
                )

        job_id = service.new_job_id()
        try:
            intake = Intake(job_id, settings, service.files)
            notification = kind_of_job.parse(submission, intake)
            handler_names = [h.name for h in registry.handlers_for(kind_of_job.notification)]
            job = new_job(
                job_id,
                job_type,
                handler_names,
                service.clock.now(),
                owner=owner,
                idempotency_key=key,
                request_digest=digest,
            )
            service.submit(job, notification)
        except BaseException:
            service.files.delete_job(job_id)
            if key is not None:
                service.store.release_idempotency_key(owner, key)
            raise

        headers = {"Location": f"/jobs/{job_id}"}
        prefer = parse_prefer_wait(request.headers.get("Prefer"))
        if prefer is not None and prefer > 0:
            waited = service.wait_for_end(job_id, prefer)
            if waited is not None:
                headers["Preference-Applied"] = f"wait={service.clamp_wait(prefer):g}"
                if waited.status.is_final:
                    service.record_accepted_status(job_id, 200)
                    return send_job(waited, 200, headers)
                job = waited
        return send_job(job, 202, headers)

    @app.get("/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        wait = parse_wait(request.args.get("wait"), "wait")
        if wait is not None and wait > 0:
            return send_job(service.wait(job_id, g.owner, wait, client_gone()))
        return send_job(service.get(job_id, g.owner))

    @app.get("/jobs/<job_id>/result")
    def get_result(job_id: str) -> Response:
        job = service.get(job_id, g.owner)
        if job.status is not JobStatus.SUCCEEDED:
            error = job_document(job)["error"]
            detail = f"job {job_id} is {job.status}; the result exists only when it succeeded"
            return problem(
                409,
                "Result not available",
                detail,
                kind="result-not-available",
                job_status=job.status.value,
                job_error=error,
                headers={"Retry-After": str(service.retry_after(job))}
                if not job.status.is_final
                else None,
            )
        return Response(json.dumps(job.result or {}), 200, mimetype="application/json")

    @app.get("/jobs/<job_id>/files/<name>")
    def get_file(job_id: str, name: str) -> Response:
        job = service.get(job_id, g.owner)
        if (
            job.status is not JobStatus.SUCCEEDED
            or not is_valid_file_name(name)
            or name not in job.files
        ):
            return problem(
                404,
                "File not found",
                f"job {job_id} has no result file named {name!r}",
                kind="file-not-found",
            )
        handle = service.files.open(job_id, name)
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return send_file(handle, mimetype=mimetype, download_name=name, max_age=3600)

    @app.post("/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> Response:
        return send_job(service.cancel(job_id, g.owner), 202)

    @app.delete("/jobs/<job_id>")
    def delete(job_id: str) -> Response:
        service.delete(job_id, g.owner)
        return Response(status=204)

    @app.get("/jobs")
    def list_jobs() -> Response:
        args = request.args
        unknown = sorted(set(args) - {"status", "type", "limit", "cursor"})
        if unknown:
            raise BadParameter(unknown[0], "unknown parameter; use status, type, limit, cursor")
        status = args.get("status")
        if status is not None and status not in {s.value for s in JobStatus}:
            raise BadParameter("status", "must be one of " + ", ".join(s.value for s in JobStatus))
        job_type = args.get("type")
        if job_type is not None and job_type not in registry.names():
            raise BadParameter("type", "must be one of " + ", ".join(registry.names()))
        limit_text = args.get("limit", str(DEFAULT_LIST_LIMIT))
        if not (limit_text.isascii() and limit_text.isdigit()) or not (
            1 <= int(limit_text) <= MAX_LIST_LIMIT
        ):
            raise BadParameter("limit", f"must be a whole number from 1 to {MAX_LIST_LIMIT}")
        cursor = args.get("cursor")
        query = JobQuery(
            status=JobStatus(status) if status else None,
            type=job_type,
            owner=g.owner,
            limit=int(limit_text),
            before=decode_cursor(cursor) if cursor else None,
        )
        jobs, last = service.list_jobs(query)
        body = {
            "jobs": [job_document(job) for job in jobs],
            "next_cursor": encode_cursor(last) if last else None,
        }
        return Response(json.dumps(body), 200, mimetype="application/json")

    @app.get("/jobs/<job_id>/events")
    def job_events(job_id: str) -> Response:
        job = service.get(job_id, g.owner)
        last_seen = request.headers.get("Last-Event-ID", "")
        after = int(last_seen) if last_seen.isascii() and last_seen.isdigit() else 0
        slot = service.take_wait_slot()
        if slot is None:
            raise WaitSlotsExhausted("every event-stream slot of this process is taken")
        stream = job_event_stream(service, job, after, client_gone(), slot)
        response = Response(
            stream,
            200,
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        response.call_on_close(slot.release)
        return response

    @app.get("/health")
    def health() -> Response:
        return health_response(runtime)

    @app.errorhandler(BadParameter)
    def bad_parameter(error: BadParameter) -> Response:
        return _field_problem(
            400, "Invalid parameter", "invalid-parameter", error.name, error.message
        )


def client_gone() -> Callable[[], bool]:
    """Return a check for whether the client of this request disconnected (waitress only)."""
    check = request.environ.get("waitress.client_disconnected")
    return check if callable(check) else lambda: False


def job_event_stream(
    service: JobService, job: Job, after: int, gone: Callable[[], bool], slot: WaitSlot
) -> Iterator[str]:
    """Yield Server-Sent Events for one job: `status` now, then each change, then `end`.

    Each event's id is the document's version, so `Last-Event-ID` resumes a stream. The stream
    stops within a second of its client disconnecting, to free the wait slot.
    """

    def event(name: str, current: Job) -> str:
        return (
            f"id: {current.version}\nevent: {name}\ndata: {json.dumps(job_document(current))}\n\n"
        )

    try:
        if job.version > after or job.status.is_final:
            yield event("status", job)
        quiet = 0.0  # seconds since the last event or keep-alive comment
        while not job.status.is_final:
            changed = service.store.wait_for_change(job.id, job.version, DISCONNECT_CHECK_SECONDS)
            if gone():
                return
            if changed.version == job.version:
                quiet += DISCONNECT_CHECK_SECONDS
                if quiet >= SSE_KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                continue
            quiet = 0.0
            name = "status" if changed.status != job.status else "progress"
            job = changed
            if not job.status.is_final:
                yield event(name, job)
        yield event("end", job)
    except JobNotFound:
        yield "event: end\ndata: null\n\n"
    finally:
        slot.release()


def health_response(runtime: Runtime) -> Response:
    service = runtime.service
    pool = runtime.pool
    try:
        depth = service.queue.depth()
        reachable = True
    except BackburnerError:
        depth, reachable = -1, False
    counts = pool.counts() if pool is not None else None
    body: dict[str, Any] = {
        "status": "ok",
        "role": "web+worker" if pool is not None else "web",
        "queue_depth": depth,
        "workers": {
            "alive": counts.alive if counts else 0,
            "busy": counts.busy if counts else 0,
            "abandoned": counts.abandoned if counts else 0,
        },
        "backend": {"name": service.queue.name, "reachable": reachable},
    }
    status = 200
    if not service.accepting:
        body["status"], status = "shutting_down", 503
    elif not reachable:
        body["status"], status = "unavailable", 503
    return Response(json.dumps(body), status, mimetype="application/json")


# Serving -----------------------------------------------------------------------------------------


class Server:
    """waitress serving an app until `stop()`; the port may be 0 (then read `port`)."""

    def __init__(self, app: Flask, settings: Mapping[str, Any]) -> None:
        server = settings["server"]
        proxy = server["trusted_proxy"]
        options: dict[str, Any] = {}
        if proxy:
            options = {
                "trusted_proxy": proxy,
                "trusted_proxy_headers": {
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "x-forwarded-host",
                    "x-forwarded-port",
                },
                "clear_untrusted_proxy_headers": True,
            }
        self._server = waitress.create_server(
            app,
            host=server["host"],
            port=server["port"],
            threads=server["threads"],
            channel_timeout=server["channel_timeout"],
            max_request_header_size=server["max_header_bytes"],
            max_request_body_size=settings["uploads"]["max_bytes"] + WAITRESS_BODY_SLACK,
            ident="backburner",
            # Reading ahead while a request runs is what lets waitress notice a client that
            # disconnected, so a long-poll or event stream frees its wait slot early.
            channel_request_lookahead=WAITRESS_REQUEST_LOOKAHEAD,
            **options,
        )
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    def serve(self) -> None:
        """Serve on the calling thread until `stop()` is called from any thread."""
        adjustments = self._server.adj
        socket_map = self._server._map
        # One poll at a time, so the loop can see `stop()` between polls; stop() pulls the
        # trigger, which wakes the poll at once.
        while not self._stopping.is_set():
            wasyncore.loop(
                timeout=adjustments.asyncore_loop_timeout,
                map=socket_map,
                use_poll=adjustments.asyncore_use_poll,
                count=1,
            )
        self._server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(socket_map)

    def stop(self) -> None:
        self._stopping.set()
        self._server.trigger.pull_trigger()


def configure_logging(level: str) -> logging.handlers.QueueListener:
    """Log to standard error through a queue; stop the returned listener to flush it.

    Worker and request threads only put records on the queue. Writing to the stream holds
    the handler's lock across a system call, and with many threads that lock made them queue
    behind each other for the GIL.
    """
    output = logging.StreamHandler()
    output.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, output)
    enqueue = logging.handlers.QueueHandler(records)
    # The queue handler merges the arguments into the message; the output handler formats it.
    enqueue.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[enqueue])
    logging.getLogger("waitress.queue").setLevel(logging.ERROR if level != "DEBUG" else level)
    # Pillow only warns about images between its two decompression-bomb limits. An image that
    # large is rejected here, so the warning becomes an error, which the thumbnails parser
    # catches.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    listener.start()
    return listener


def fail(message: str) -> NoReturn:
    print(f"backburner: {message}", file=sys.stderr)  # noqa: T201
    raise SystemExit(2)


def serve_command(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, Any]] = {"server": {}}
    if args.host is not None:
        overrides["server"]["host"] = args.host
    if args.port is not None:
        overrides["server"]["port"] = args.port
    settings = load_settings(os.environ, overrides)
    log_listener = configure_logging(settings["logging"]["level"])
    container = build_container(settings)
    app = create_app(container)
    runtime: Runtime = app.extensions[EXTENSION]
    address = f"{settings['server']['host']}:{settings['server']['port']}"
    try:
        server = Server(app, settings)
    # waitress raises OSError for a port in use and ValueError for a host it cannot resolve.
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        fail(f"cannot listen on {address}: {reason}; set server.host and server.port, or PORT")
    runtime.start()

    def shut_down() -> None:
        runtime.shutdown()
        server.stop()

    install_signal_handlers(shut_down)
    logger.info(
        "Serving on http://%s:%d (backend %s, %d worker threads).",
        server.host,
        server.port,
        settings["queue"]["backend"],
        settings["workers"]["threads"],
    )
    server.serve()
    logger.info("Stopped.")
    log_listener.stop()
    return 0


def worker_command(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    if settings["queue"]["backend"] == "memory":
        fail(
            "the memory backend cannot be shared between processes; set "
            "BACKBURNER_QUEUE__BACKEND=sqlite, or use 'backburner serve'"
        )
    if settings["workers"]["threads"] < 1:
        fail("workers.threads is 0; a worker process needs at least one thread")
    log_listener = configure_logging(settings["logging"]["level"])
    container = build_container(settings)
    pool = container.worker_pool()
    done = threading.Event()

    def shut_down() -> None:
        pool.stop(settings["shutdown"]["grace_seconds"])
        done.set()

    install_signal_handlers(shut_down)
    pool.start()
    logger.info("Worker process started with %d threads.", settings["workers"]["threads"])
    done.wait()
    container.status_store().close()
    logger.info("Worker process stopped.")
    log_listener.stop()
    return 0


def install_signal_handlers(shut_down: Callable[[], None]) -> None:
    """Run `shut_down` on a thread of its own at the first SIGTERM or SIGINT.

    The shutdown takes up to the grace period, and a signal handler must return at once so
    the server can go on responding (with 503) meanwhile. A second signal exits at once.
    """
    started = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        if started.is_set():
            # The log queue is not flushed by os._exit, so this goes to standard error directly.
            print(f"backburner: second signal {signum}; exiting without waiting", file=sys.stderr)  # noqa: T201
            os._exit(1)
        started.set()
        logger.info("Signal %d received; shutting down.", signum)
        threading.Thread(target=shut_down, name="backburner-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# Command line ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backburner", description="Backburner: an asynchronous request-reply job service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the HTTP API, with worker threads when workers.threads > 0"
    )
    serve.add_argument("--host", help="address to listen on (wins over server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (wins over server.port)")
    commands.add_parser("worker", help="run worker threads only, no HTTP (sqlite and redis)")
    add_client_commands(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args)
        if args.command == "worker":
            return worker_command(args)
    except SettingsError as error:
        fail(f"invalid settings: {error}")
    except BackendUnavailable as error:
        fail(f"cannot open the backend: {error}")
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
