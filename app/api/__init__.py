"""HTTP API blueprints and the helpers they share: JSON bodies, job links and job payloads."""

from __future__ import annotations

import json
from typing import Any

from flask import request, url_for

from app.schemas import job_to_dict
from service.exceptions import MalformedJSONError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.jobs import Job
from service.waiting import job_wait


def json_body(max_bytes: int) -> Any:
    """Parse the request body as JSON, enforcing the content type and the JSON size limit."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Send the body as JSON with 'Content-Type: application/json' (got {mimetype or 'none'!r}).",
            content_type=mimetype,
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(
            f"The JSON body is {request.content_length:,} bytes; the limit is {max_bytes:,}.",
            limit=max_bytes,
        )
    raw = request.get_data(cache=True)
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"The JSON body is larger than {max_bytes:,} bytes.", limit=max_bytes)
    if not raw.strip():
        raise MalformedJSONError('The body is empty; send a JSON object such as {"text": "Hello."}.')
    try:
        return json.loads(raw)  # detects UTF-8/16/32 from the bytes
    except (UnicodeDecodeError, ValueError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedJSONError(
            f"The body is not valid JSON{where}: {exc.args[0] if exc.args else exc}."
        ) from None


def job_links(job_id: str) -> dict[str, str]:
    """Absolute URLs of a job's resources."""
    return {
        "self": url_for("jobs.get_job", job_id=job_id, _external=True),
        "audio": url_for("jobs.get_audio", job_id=job_id, _external=True),
        "stream": url_for("jobs.get_job", job_id=job_id, _external=True) + "/stream",
        "events": url_for("jobs.get_job", job_id=job_id, _external=True) + "/events",
    }


def job_payload(job: Job, *, detail: bool = True) -> dict[str, Any]:
    """The JSON form of a job, with queue position and ETA when ``detail`` is set."""
    from app import services

    svc = services()
    position = eta = wait = None
    if detail and job.state == "queued":
        # Why it waits (service/waiting.py): the jobs ahead in its lane and above, the busy workers.
        wait = job_wait(svc, job)
        if wait is not None:
            position, eta = wait["position"], wait["eta_seconds"]
    elif detail and not job.is_terminal:
        eta = svc.jobs.eta_seconds(job, workers=1)
    return job_to_dict(
        job, links=job_links(job.id), queue_position=position, eta_seconds=eta, queue=wait, qa_threshold=svc.settings.qa_threshold
    )
