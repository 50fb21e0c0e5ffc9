"""``/v1/jobs``: submit, inspect, list, cancel and download synthesis jobs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify, redirect, request

from app import services
from app.api import job_links, job_payload, json_body
from app.api.lexicons import prepare_pronunciation
from app.apidoc import AUDIO, SUBMIT_HEADERS, operation
from app.auth import current_owner
from app.schemas import (
    AudioQuery,
    Job,
    JobList,
    JobListQuery,
    JobRequest,
    dump,
    parse_job_request,
    parse_limit,
)
from engine.audio import AUDIO_FORMATS
from service.exceptions import InvalidRequestError, JobNotReadyError, RangeNotSatisfiableError
from service.logging import bind_job
from service.retention import purge_job
from service.states import JOB_STATES
from service.webhooks import AllowList, check_url, notify

log = logging.getLogger("spool.api.jobs")

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

#: Idempotency-Key values: printable ASCII, at most 255 characters (Stripe's and the IETF draft's limit).
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, validated."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(value):
        raise InvalidRequestError(
            "Invalid Idempotency-Key: use 1-255 printable ASCII characters without spaces (a UUID is ideal).",
            field="Idempotency-Key",
        )
    return value


@bp.post("")
@operation(
    tag="jobs",
    operation_id="createJob",
    body=JobRequest,
    headers=SUBMIT_HEADERS,
    responses={202: (Job, "Stored and queued (or the job of a reused Idempotency-Key).")},
    response_headers={202: ("Location",)},
    errors={
        400: "Invalid field, malformed JSON, malformed markup (with line and column), or a webhook_url that "
        "is not a public address.",
        404: "No such lexicon for this API key.",
        413: "Body or text too long.",
        415: "Body is not JSON.",
        422: "Idempotency-Key reused with a different body.",
        503: "Redis or the broker is unreachable.",
    },
)
def create_job():  # type: ignore[no-untyped-def]
    """Validate a job request, store it, and put it on the queue."""
    svc = services()
    settings = svc.settings
    spec = parse_job_request(json_body(settings.max_body_bytes), svc.catalog, settings.max_text_chars)
    spec = prepare_pronunciation(spec, current_owner(), svc.catalog)
    if spec.webhook_url:
        # Resolved and checked now (and again when sent): no loopback, private or link-local targets.
        check_url(spec.webhook_url, AllowList.parse(settings.webhook_allow), timeout=settings.webhook_timeout)
    job, created = svc.submit(
        spec, owner=current_owner(), idempotency_key=idempotency_key(), request_id=g.get("request_id")
    )
    bind_job(job.id)
    log.info(
        "job %s %s (%d chars, voice %s, %s)",
        job.id,
        "queued" if created else "replayed",
        job.text_chars,
        job.voice,
        job.format,
    )
    response = jsonify(job_payload(job))
    response.status_code = 202
    response.headers["Location"] = job_links(job.id)["self"]
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("")
@operation(
    tag="jobs",
    operation_id="listJobs",
    query=JobListQuery,
    responses={200: (JobList, "One page of jobs.")},
    errors={400: "Invalid state, limit or cursor."},
)
def list_jobs():  # type: ignore[no-untyped-def]
    """Page through the caller's jobs, newest first, optionally in one state."""
    state = request.args.get("state") or None
    if state is not None and state not in JOB_STATES:
        raise InvalidRequestError(
            f"Invalid state {state!r}: use one of {', '.join(JOB_STATES)}.", field="state", states=list(JOB_STATES)
        )
    limit = parse_limit(request.args.get("limit"))
    page = services().jobs.list(
        owner=current_owner(), state=state, limit=limit, cursor=request.args.get("cursor") or None
    )
    body = JobList(
        data=[job_payload(job, detail=False) for job in page.jobs],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )
    return jsonify(dump(body))


@bp.get("/<job_id>")
@operation(tag="jobs", operation_id="getJob", responses={200: (Job, "The job.")}, errors={404: "No such job."})
def get_job(job_id: str):  # type: ignore[no-untyped-def]
    """A job's state, progress, queue position, ETA, error and result."""
    job = services().jobs.get(job_id, current_owner())
    bind_job(job.id)
    return jsonify(job_payload(job))


@bp.delete("/<job_id>")
@operation(
    tag="jobs",
    operation_id="cancelJob",
    responses={
        200: (Job, "Cancelled."),
        202: (Job, "Running: will stop after the current segment."),
        204: "Finished (succeeded, failed or cancelled): its stored audio and state are deleted.",
    },
    errors={404: "No such job."},
)
def cancel_job(job_id: str):  # type: ignore[no-untyped-def]
    """Cancel an unfinished job (a queued one never runs; a running one stops after its current segment),
    or delete a finished one: its stored audio, stream replay and state (204)."""
    svc = services()
    job = svc.jobs.get(job_id, current_owner())
    bind_job(job.id)
    if job.is_terminal:
        purge_job(svc, job)
        return Response(status=204)
    job = svc.jobs.request_cancel(job.id, current_owner())
    log.info("cancel requested; job is %s", job.state)
    if job.is_terminal:
        notify(svc, job)  # cancelled while queued: no worker will ever see it, so announce it here
    response = jsonify(job_payload(job))
    response.status_code = 202 if job.state == "running" else 200
    return response


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range (inclusive) a Range header asks for, None for the whole file.

    Malformed headers and multi-range requests are answered with the whole file, as RFC 9110 allows;
    a range that starts past the end raises RangeNotSatisfiableError.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise RangeNotSatisfiableError(f"Range {header!r} selects no bytes of a {size}-byte file.")
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or (last and end < start):
        return None
    if start >= size:
        raise RangeNotSatisfiableError(
            f"Range {header!r} starts beyond the end of the {size}-byte file.", size=size
        )
    return start, min(end, size - 1)


@bp.get("/<job_id>/audio")
@operation(
    tag="jobs",
    operation_id="getJobAudio",
    query=AudioQuery,
    headers=("Range",),
    responses={
        200: (AUDIO, "The whole file."),
        206: (AUDIO, "The requested byte range."),
        302: "Presigned storage URL in Location.",
        304: "Unchanged (If-None-Match).",
    },
    errors={404: "No such job.", 409: "The job has no audio (yet).", 416: "Range not satisfiable."},
)
def get_audio(job_id: str):  # type: ignore[no-untyped-def]
    """Download the finished audio: a presigned redirect, or the bytes with Range support."""
    svc = services()
    settings = svc.settings
    job = svc.jobs.get(job_id, current_owner())
    bind_job(job.id)
    if job.state != "succeeded" or not job.result_key:
        detail = f"it is {job.state}"
        if job.error_code:
            detail += f" ({job.error_code}: {job.error_message})"
        raise JobNotReadyError(
            f"Job {job.id} has no audio: {detail}. Poll {job_links(job.id)['self']}.", state=job.state
        )
    wants_redirect = request.args.get("redirect", "").lower()
    if wants_redirect in _TRUE or (settings.audio_redirect and wants_redirect not in _FALSE):
        url = svc.storage.url(job.result_key, settings.presign_expires)
        if url:
            return redirect(url, 302)
    size = job.result_size if job.result_size is not None else svc.storage.size(job.result_key)
    etag = job.result_etag or f"{job.id}-{size}"
    content_type = job.result_content_type or AUDIO_FORMATS[job.format].content_type
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{etag}"',
        "Content-Type": content_type,
        "Content-Disposition": f'inline; filename="{job.id}.{AUDIO_FORMATS[job.format].extension}"',
        "Cache-Control": "private, max-age=3600",
    }
    if request.if_none_match and request.if_none_match.contains(etag):
        return Response(status=304, headers=headers)
    byte_range = None
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range.strip('"') == etag:
        try:
            byte_range = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiableError as exc:
            response = jsonify({"error": {**exc.to_dict(), "request_id": g.get("request_id")}})
            response.status_code = 416
            response.headers["Content-Range"] = f"bytes */{size}"
            response.headers["Accept-Ranges"] = "bytes"
            return response
    start, end = byte_range if byte_range else (0, size - 1)
    length = max(0, end - start + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if byte_range:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body: Iterator[bytes]
    if request.method == "HEAD" or length == 0:
        body = iter(())
    else:
        body = svc.storage.iter_range(job.result_key, start, end)
    return Response(body, status=status, headers=headers, direct_passthrough=True)
