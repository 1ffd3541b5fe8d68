"""A server for the HTTP benchmarks: `python -m bench.http_server KIND FOLDER`.

KIND is `backburner`, the real app with the no-op job type and its 4 worker threads, or
`bare`, a Flask app whose two routes return a document shaped like a job's and do nothing
else. Both configure logging as `backburner serve` does and are served by `app.Server`
(waitress) with the same settings, on 127.0.0.1 and a free port. The server writes `port N`
to stdout once it listens and stops when its stdin is closed.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from app import EXTENSION, Runtime, Server, configure_logging, create_app
from bench.common import settings_for
from containers.application import build_container

KINDS = ("backburner", "bare")
TIMESTAMP = "2026-01-01T00:00:00.000Z"


def job_like_document(job_id: str, status: str) -> dict[str, Any]:
    """Return a document with the keys and value types of a no-op job's document."""
    base = f"/jobs/{job_id}"
    finished = status == "succeeded"
    return {
        "id": job_id,
        "type": "noop",
        "status": status,
        "version": 3 if finished else 1,
        "created_at": TIMESTAMP,
        "started_at": TIMESTAMP if finished else None,
        "finished_at": TIMESTAMP if finished else None,
        "next_attempt_at": None,
        "attempt": 1 if finished else 0,
        "attempts": (
            [{"number": 1, "started_at": TIMESTAMP, "finished_at": TIMESTAMP, "error": None}]
            if finished
            else []
        ),
        "cancel_requested": False,
        "progress": {"done": 0, "total": None, "fraction": None, "message": None},
        "eta": None,
        "handlers": [{"name": "nothing", "status": status, "error": None}],
        "error": None,
        "links": {
            "self": base,
            "result": f"{base}/result",
            "cancel": f"{base}/cancel",
            "events": f"{base}/events",
        },
    }


def bare_app() -> Flask:
    """Build the reference app, which parses the JSON body and returns a job-like document."""
    app = Flask("bare")

    @app.post("/jobs/noop")
    def submit() -> Response:
        body = json.loads(request.get_data())
        if not isinstance(body, dict):
            return Response("{}", 422, mimetype="application/json")
        job_id = str(uuid.uuid4())
        document = json.dumps(job_like_document(job_id, "queued"))
        headers = {"Location": f"/jobs/{job_id}", "Retry-After": "1"}
        return Response(document, 202, mimetype="application/json", headers=headers)

    @app.get("/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        document = json.dumps(job_like_document(job_id, "succeeded"))
        return Response(document, 200, mimetype="application/json")

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in KINDS:
        print(f"usage: python -m bench.http_server {{{'|'.join(KINDS)}}} FOLDER", file=sys.stderr)
        return 2
    kind, folder = argv[0], Path(argv[1])
    settings = settings_for(folder, {})
    # Both log as `backburner serve` does, so logging costs the reference what it costs us.
    configure_logging(settings["logging"]["level"])
    runtime: Runtime | None = None
    if kind == "backburner":
        app = create_app(build_container(settings))
        runtime = app.extensions[EXTENSION]
        runtime.start()
    else:
        app = bare_app()
    server = Server(app, settings)

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        if runtime is not None:
            runtime.shutdown()
        server.stop()

    threading.Thread(target=stop_when_stdin_closes, name="bench-stdin", daemon=True).start()
    print(f"port {server.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
