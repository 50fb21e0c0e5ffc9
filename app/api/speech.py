"""``POST /v1/audio/speech``: OpenAI-compatible speech, answered through the job queue.

The request becomes a ``high`` priority job like any other. As OpenAI's endpoint does, the answer
streams by default: the job's progressive stream in ``response_format``
(``app.api.stream.stream_job_response``), or with ``stream_format: "sse"`` OpenAI's
``speech.audio.delta`` / ``speech.audio.done`` events (``speech_events_response``). Spool's
``"stream": false`` waits for the job (up to ``SPOOL_SPEECH_TIMEOUT``) and returns the whole file.
Errors take OpenAI's shape (``app.error_response``), so the official SDKs raise the right exception.
"""

from __future__ import annotations

import dataclasses
import logging

from flask import Blueprint, Response, g, request

from app import services
from app.api import job_links, json_body
from app.api.jobs import idempotency_key
from app.api.stream import speech_events_response, stream_job_response, stream_slot
from app.apidoc import AUDIO_OR_SSE, SUBMIT_HEADERS, operation
from app.auth import current_owner
from app.hangup import hangup_probe
from app.schemas import INSTRUCTIONS_NOTE, OpenAIError, ParsedSpeech, SpeechRequest, parse_speech_request
from engine.audio import AUDIO_FORMATS
from engine.exceptions import SpoolError
from service.exceptions import JobCancelledError, JobFailedError, JobTimeoutError
from service.logging import bind_job

log = logging.getLogger("spool.api.speech")

bp = Blueprint("speech", __name__, url_prefix="/v1/audio")

#: Job error codes that describe the request, not the service: answered 400 with the same code.
CLIENT_ERROR_CODES = frozenset(
    {
        "invalid_text",
        "unknown_voice",
        "invalid_voice_spec",
        "invalid_speed",
        "unsupported_language",
        "unsupported_format",
    }
)


class _JobError(SpoolError):
    """A waited-for job failed because of its input."""

    http_status = 400

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code


def speech_headers(req: ParsedSpeech) -> dict[str, str]:
    """What Spool made of the OpenAI request: the model and voice that spoke, and what became of instructions."""
    headers = {"X-Spool-Model": f"kokoro-82m (requested {req.model})", "X-Spool-Voice": req.spec.voice}
    if req.instructions:
        headers["X-Spool-Instructions"] = INSTRUCTIONS_NOTE
    return headers


@bp.post("/speech")
@operation(
    tag="openai",
    operation_id="createSpeech",
    body=SpeechRequest,
    headers=SUBMIT_HEADERS,
    responses={
        200: (
            AUDIO_OR_SSE,
            "The audio, streamed as it renders (the whole file with stream: false), or OpenAI's speech "
            "events with stream_format: sse.",
        )
    },
    response_headers={200: ("X-Job-Id", "X-Spool-Model", "X-Spool-Voice", "X-Spool-Instructions")},
    error_model=OpenAIError,
    errors={
        400: "Invalid field.",
        409: "The job was cancelled (stream: false).",
        502: "Synthesis failed (stream: false).",
        504: "Not ready in time (stream: false); details.job_url can be polled.",
    },
)
def create_speech():  # type: ignore[no-untyped-def]
    """Render ``input`` and stream the audio as it renders (OpenAI's contract; ``stream: false``: whole file)."""
    svc = services()
    settings = svc.settings
    req = parse_speech_request(json_body(settings.max_body_bytes), svc.catalog, settings.max_text_chars)
    owner = current_owner()
    # The high lane when the key may use it, else its first allowed lane; and the stream slot the answer
    # holds (streamed or waited for), taken before the job is queued so a refusal renders nothing.
    spec = dataclasses.replace(req.spec, priority=svc.quotas.lane_for(owner, req.spec.priority))
    slot = stream_slot()
    try:
        job, _ = svc.submit(
            spec, owner=owner, idempotency_key=idempotency_key(), request_id=g.get("request_id"), kind="speech"
        )
    except BaseException:
        slot.release()
        raise
    bind_job(job.id)
    headers = speech_headers(req)
    log.info("speech: model %s, %s, stream %s", req.model, req.stream_format, req.stream)
    if req.stream_format == "sse":
        return speech_events_response(job.id, job.format, headers, slot=slot)
    if req.stream:
        return stream_job_response(job.id, job.format, extra_headers=headers, slot=slot)
    try:
        # A client that hangs up while it waits frees its slot within a poll (app/hangup.py).
        job = svc.jobs.wait(job.id, settings.speech_timeout, gone=hangup_probe(request.environ))
    finally:
        slot.release()
    details = {"job_id": job.id, "job_url": job_links(job.id)["self"]}
    if job.state == "succeeded" and job.result_key:
        data = svc.storage.get(job.result_key)
        log.info("speech ready: %d bytes, %.2f s", len(data), job.result_duration or 0.0)
        return Response(
            data,
            status=200,
            headers={
                "Content-Type": job.result_content_type or AUDIO_FORMATS[job.format].content_type,
                "Content-Length": str(len(data)),
                "X-Job-Id": job.id,
                "X-Audio-Duration": f"{job.result_duration or 0:.3f}",
                **headers,
            },
        )
    if job.state == "cancelled":
        raise JobCancelledError(f"Job {job.id} was cancelled before it finished.", **details)
    if job.state == "failed":
        if job.error_code in CLIENT_ERROR_CODES:
            raise _JobError(job.error_code or "job_failed", job.error_message or "The job failed.", **details)
        raise JobFailedError(
            f"Synthesis failed ({job.error_code}): {job.error_message}", error_code=job.error_code, **details
        )
    raise JobTimeoutError(
        f"The audio was not ready within {settings.speech_timeout:g} s; job {job.id} goes on: poll "
        f"{details['job_url']} and download it when it has succeeded.",
        **details,
    )
