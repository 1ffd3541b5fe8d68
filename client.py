"""The `backburner submit | status | cancel | jobs` commands: a small HTTP client of the API.

Exit codes: 0 when the job succeeded, or when `submit` without `--wait` or `cancel` was
accepted. 1 when it failed or was canceled. 2 for usage errors, rejected requests and
connection errors. 3 when the job is still queued or running (`status`, or a `--wait` that ran
out first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
REQUEST_TIMEOUT = 120.0
LONG_POLL_SECONDS = 25.0

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNFINISHED = 3


class ClientError(Exception):
    """Raised when the service cannot be reached or refuses a request."""


def add_client_commands(commands: Any) -> None:
    """Add the client subcommands to an argparse subparsers object."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--url", help=f"service URL (default: $BACKBURNER_URL or {DEFAULT_URL})"
        )
        parser.add_argument("--key", help="API key (default: $BACKBURNER_KEY)")

    submit = commands.add_parser("submit", help="start a job and print its document")
    submit.add_argument("job_type", help="job type, e.g. thumbnails, csv-profile, delay")
    submit.add_argument("--json", help="JSON body, e.g. '{\"seconds\": 2}'")
    submit.add_argument(
        "--file", action="append", default=[], metavar="FIELD=PATH", help="file part to upload"
    )
    submit.add_argument(
        "--field", action="append", default=[], metavar="NAME=VALUE", help="text form field"
    )
    submit.add_argument("--idempotency-key", help="send this Idempotency-Key header")
    submit.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for the job to finish"
    )
    common(submit)

    status = commands.add_parser("status", help="print a job's document")
    status.add_argument("job_id")
    status.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for it to finish"
    )
    common(status)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id")
    common(cancel)

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", help="only jobs with this status")
    jobs.add_argument("--type", help="only jobs of this type")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (1 to 100)")
    common(jobs)


def run_client_command(args: argparse.Namespace) -> int:
    try:
        if args.command == "submit":
            return _submit(args)
        if args.command == "status":
            return _status(args)
        if args.command == "cancel":
            _, document = _call(args, "POST", f"/jobs/{_quoted(args.job_id)}/cancel")
            return _print_job(document, accepted_is_success=True)
        if args.command == "jobs":
            return _list(args)
    except ClientError as error:
        print(f"backburner: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    raise AssertionError(f"not a client command: {args.command}")


def _submit(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    if args.json is not None and (args.file or args.field):
        raise ClientError("use --json, or --file/--field, not both")
    if args.json is not None:
        body = args.json.encode()
        headers["Content-Type"] = "application/json"
    else:
        body, content_type = _multipart(args.file, args.field)
        headers["Content-Type"] = content_type
    _, document = _call(args, "POST", f"/jobs/{_quoted(args.job_type)}", body, headers)
    if args.wait:
        return _print_job(_wait(args, document["id"], args.wait))
    return _print_job(document, accepted_is_success=True)


def _status(args: argparse.Namespace) -> int:
    if args.wait:
        return _print_job(_wait(args, args.job_id, args.wait))
    _, document = _call(args, "GET", f"/jobs/{_quoted(args.job_id)}")
    return _print_job(document)


def _list(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.status:
        query["status"] = args.status
    if args.type:
        query["type"] = args.type
    _, document = _call(args, "GET", "/jobs?" + urllib.parse.urlencode(query))
    print(json.dumps(document, indent=2))  # noqa: T201
    return EXIT_SUCCEEDED


def _wait(args: argparse.Namespace, job_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        wait = max(0.0, min(LONG_POLL_SECONDS, remaining))
        _, document = _call(args, "GET", f"/jobs/{_quoted(job_id)}?wait={wait:.1f}")
        if document["status"] in ("succeeded", "failed", "canceled") or remaining <= 0:
            return document


def _print_job(document: dict[str, Any], *, accepted_is_success: bool = False) -> int:
    print(json.dumps(document, indent=2))  # noqa: T201
    status = document.get("status")
    if status in ("failed", "canceled"):
        return EXIT_FAILED
    if status == "succeeded" or accepted_is_success:
        return EXIT_SUCCEEDED
    return EXIT_UNFINISHED


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _multipart(files: list[str], fields: list[str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for item in fields:
        name, _, value = _pair(item, "--field", "NAME=VALUE")
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for item in files:
        name, _, path_text = _pair(item, "--file", "FIELD=PATH")
        path = Path(path_text)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ClientError(f"cannot read {path}: {error.strerror}") from None
        disposition = f'form-data; name="{name}"; filename="{path.name}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _pair(item: str, option: str, form: str) -> tuple[str, str, str]:
    name, separator, value = item.partition("=")
    if not separator or not name:
        raise ClientError(f"{option} takes {form}, got {item!r}")
    return name, separator, value


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    base = (args.url or os.environ.get("BACKBURNER_URL") or DEFAULT_URL).rstrip("/")
    all_headers = {"Accept": "application/json", **(headers or {})}
    key = args.key or os.environ.get("BACKBURNER_KEY")
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    try:
        request = urllib.request.Request(base + path, data=body, method=method, headers=all_headers)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            detail = json.loads(text).get("detail", text)
        except (json.JSONDecodeError, AttributeError):
            detail = text
        raise ClientError(f"{method} {path} returned {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ClientError(f"cannot reach {base}: {reason}") from None
    except ValueError:
        raise ClientError(f"invalid URL {base!r}; use one like {DEFAULT_URL}") from None
