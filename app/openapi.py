"""The OpenAPI 3.1 document served at ``/openapi.json``.

The job service's routes are described here in full. Other blueprint modules
(``app.api.stream``, ``app.api.books``, ``app.web``) may define ``OPENAPI_PATHS``
(a dict in the same form as ``paths`` below) and ``OPENAPI_SCHEMAS``; they are
merged in. Any route still undocumented gets a minimal entry, so the document
always lists every route the app serves.
"""

from __future__ import annotations

import copy
import importlib
import re
from typing import Any

from flask import Flask

from app.schemas import OPENAI_VOICES, SPEECH_FORMATS, SPEECH_MODELS
from config import defaults
from engine.audio import FORMATS
from engine.voices import SPEED_RANGE
from service.states import JOB_STATES as STATES

#: Version of the HTTP API described.
API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "Job id (32 hex digits).",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
_REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Your id for this request; echoed back and written on every log line.",
    "schema": {"type": "string", "maxLength": 128},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying with the same key and body returns the same job instead of a new one.",
    "schema": {"type": "string", "maxLength": 255},
}
_AUDIO_TYPES = {"audio/mpeg": {}, "audio/wav": {}, "audio/flac": {}, "audio/ogg": {}, "audio/pcm": {}}


def _schemas() -> dict[str, Any]:
    low, high = SPEED_RANGE
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Stable machine-readable error name."},
                        "message": {"type": "string", "description": "What is wrong and how to fix it."},
                        "details": {"type": "object", "additionalProperties": True},
                        "request_id": {"type": "string"},
                    },
                }
            },
        },
        "JobRequest": {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": defaults.MAX_TEXT_CHARS,
                    "description": "Text to speak (limit set by SPOOL_MAX_TEXT_CHARS).",
                },
                "voice": {
                    "type": "string",
                    "default": defaults.VOICE,
                    "description": "Voice name, blend such as 'af_bella(2)+af_sky(1)', or 'piper:NAME'.",
                },
                "speed": {"type": "number", "minimum": low, "maximum": high, "default": defaults.SPEED},
                "format": {"type": "string", "enum": list(FORMATS), "default": defaults.FORMAT},
                "language": {
                    "type": ["string", "null"],
                    "description": "Language code (en-us, en-gb, es, fr-fr, hi, it, ja, pt-br, cmn); "
                    "null uses the voice's own.",
                },
                "priority": {
                    "type": "string",
                    "enum": list(defaults.CLIENT_PRIORITIES),
                    "default": defaults.PRIORITY,
                },
                "webhook_url": {
                    "type": ["string", "null"],
                    "format": "uri",
                    "description": "POSTed the job's JSON when it finishes.",
                },
            },
        },
        "Job": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "job"},
                "kind": {"type": "string", "enum": ["job", "speech"]},
                "state": {"type": "string", "enum": list(STATES)},
                "voice": {"type": "string"},
                "speed": {"type": "number"},
                "format": {"type": "string", "enum": list(FORMATS)},
                "language": {"type": ["string", "null"]},
                "priority": {"type": "string"},
                "text_chars": {"type": "integer"},
                "text_preview": {"type": "string"},
                "progress": {
                    "type": "object",
                    "properties": {
                        "segments_done": {"type": "integer"},
                        "segments_total": {"type": ["integer", "null"]},
                        "audio_seconds": {"type": "number"},
                        "percent": {"type": "number"},
                    },
                },
                "queue_position": {"type": ["integer", "null"], "description": "1 = next to run."},
                "eta_seconds": {"type": ["number", "null"]},
                "cancel_requested": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": {"type": ["string", "null"], "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "attempts": {"type": "integer"},
                "error": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        },
                    ]
                },
                "result": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {
                                "size": {"type": "integer"},
                                "duration": {"type": "number"},
                                "format": {"type": "string"},
                                "content_type": {"type": "string"},
                                "url": {"type": "string", "format": "uri"},
                            },
                        },
                    ]
                },
                "links": {
                    "type": "object",
                    "properties": {
                        "self": {"type": "string"},
                        "audio": {"type": "string"},
                        "stream": {"type": "string"},
                        "events": {"type": "string"},
                    },
                },
            },
        },
        "JobList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("Job")},
                "has_more": {"type": "boolean"},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "SpeechRequest": {
            "type": "object",
            "required": ["input"],
            "properties": {
                "model": {"type": "string", "enum": list(SPEECH_MODELS), "default": "kokoro"},
                "input": {"type": "string", "minLength": 1},
                "voice": {
                    "type": "string",
                    "default": defaults.VOICE,
                    "description": "A Spool voice, or an OpenAI name: " + ", ".join(OPENAI_VOICES) + ".",
                },
                "response_format": {
                    "type": "string",
                    "enum": [k for k, v in SPEECH_FORMATS.items() if v],
                    "default": "mp3",
                },
                "speed": {"type": "number", "minimum": low, "maximum": high, "default": 1.0},
                "language": {"type": ["string", "null"]},
                "stream": {
                    "type": "boolean",
                    "default": False,
                    "description": "Answer with the progressive stream instead of the whole file.",
                },
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Status": {
            "type": "object",
            "properties": {
                "queues": {"type": "object", "additionalProperties": {"type": "object"}},
                "workers": {"type": "array", "items": {"type": "object"}},
                "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
    }


def _paths() -> dict[str, Any]:
    auth_errors = {"401": _error("Missing or invalid API key.")}
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "createJob",
                "tags": ["jobs"],
                "summary": "Submit text for synthesis.",
                "parameters": [_IDEMPOTENCY, _REQUEST_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JobRequest")}},
                },
                "responses": {
                    "202": {
                        **_json(_ref("Job"), "Stored and queued (or the job of a reused Idempotency-Key)."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Invalid field or malformed JSON."),
                    **auth_errors,
                    "413": _error("Body or text too long."),
                    "415": _error("Body is not JSON."),
                    "422": _error("Idempotency-Key reused with a different body."),
                    "503": _error("Redis or the broker is unreachable."),
                },
            },
            "get": {
                "operationId": "listJobs",
                "tags": ["jobs"],
                "summary": "List your jobs, newest first.",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(STATES)}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": defaults.MAX_PAGE_SIZE,
                            "default": defaults.PAGE_SIZE,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "next_cursor of the previous page.",
                    },
                ],
                "responses": {
                    "200": _json(_ref("JobList"), "One page of jobs."),
                    "400": _error("Invalid state, limit or cursor."),
                    **auth_errors,
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "getJob",
                "tags": ["jobs"],
                "summary": "A job's state, progress, ETA and result.",
                "responses": {
                    "200": _json(_ref("Job"), "The job."),
                    "404": _error("No such job."),
                    **auth_errors,
                },
            },
            "delete": {
                "operationId": "cancelJob",
                "tags": ["jobs"],
                "summary": "Cancel: a queued job never runs, a running one stops after its current segment.",
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled (or already cancelled)."),
                    "202": _json(_ref("Job"), "Running: will stop after the current segment."),
                    "404": _error("No such job."),
                    "409": _error("Already finished."),
                    **auth_errors,
                },
            },
        },
        "/v1/jobs/{job_id}/audio": {
            "parameters": [_JOB_ID],
            "get": {
                "operationId": "getJobAudio",
                "tags": ["jobs"],
                "summary": "Download the finished audio.",
                "parameters": [
                    {
                        "name": "redirect",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Redirect to a presigned storage URL when the storage offers one.",
                    },
                    {
                        "name": "Range",
                        "in": "header",
                        "schema": {"type": "string"},
                        "example": "bytes=0-1023",
                    },
                ],
                "responses": {
                    "200": {"description": "The whole file.", "content": _AUDIO_TYPES},
                    "206": {"description": "The requested byte range.", "content": _AUDIO_TYPES},
                    "302": {"description": "Presigned storage URL in Location."},
                    "304": {"description": "Unchanged (If-None-Match)."},
                    "404": _error("No such job."),
                    "409": _error("The job has no audio (yet)."),
                    "416": _error("Range not satisfiable."),
                    **auth_errors,
                },
            },
        },
        "/v1/audio/speech": {
            "post": {
                "operationId": "createSpeech",
                "tags": ["openai"],
                "summary": "OpenAI-compatible speech: renders through the queue and returns the audio.",
                "parameters": [_IDEMPOTENCY, _REQUEST_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SpeechRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "The audio.",
                        "content": _AUDIO_TYPES,
                        "headers": {"X-Job-Id": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Invalid field."),
                    **auth_errors,
                    "409": _error("The job was cancelled."),
                    "501": _error("Streaming is not installed."),
                    "502": _error("Synthesis failed."),
                    "504": _error("Not ready in time; details.job_url can be polled."),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "tags": ["system"],
                "summary": "Redis and storage reachable?",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Healthy."),
                    "503": _json(_ref("Health"), "Unhealthy."),
                },
            }
        },
        "/status": {
            "get": {
                "operationId": "status",
                "tags": ["system"],
                "summary": "Queue depths, live workers, jobs by state.",
                "security": [],
                "responses": {"200": _json(_ref("Status"), "Current status.")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["system"],
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1 document.", "content": {"application/json": {}}}
                },
            }
        },
    }


def _openapi_path(rule: str) -> str:
    """Convert a Flask rule (``/v1/jobs/<job_id>``) into an OpenAPI path (``/v1/jobs/{job_id}``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_spec(app: Flask, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of every route ``app`` serves."""
    paths = _paths()
    schemas = _schemas()
    for name in app.extensions.get("spool_blueprints", ()):
        module = importlib.import_module(name)
        for path, item in getattr(module, "OPENAPI_PATHS", {}).items():
            paths.setdefault(path, {}).update(copy.deepcopy(item))
        schemas.update(copy.deepcopy(getattr(module, "OPENAPI_SCHEMAS", {})))
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = _openapi_path(rule.rule)
        item = paths.setdefault(path, {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() in item:
                continue
            params = [
                {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
                for arg in sorted(rule.arguments)
            ]
            view = app.view_functions.get(rule.endpoint)
            summary = (
                ((view.__doc__ or "").strip().splitlines() or [rule.endpoint])[0] if view else rule.endpoint
            )
            item[method.lower()] = {
                "operationId": rule.endpoint.replace(".", "_"),
                "summary": summary,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            }
    auth_on = bool(app.extensions["spool"].settings.api_keys)
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Spool",
            "version": API_VERSION,
            "description": "Self-hosted long-form text to speech: submit text, poll the job, download "
            'the audio. Errors are JSON: {"error": {"code", "message", "details"}}.',
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from SPOOL_API_KEYS as a bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "tags": [{"name": "jobs"}, {"name": "openai"}, {"name": "system"}],
    }
    if auth_on:
        spec["security"] = [{"bearer": []}, {"apiKey": []}]
    if server_url:
        spec["servers"] = [{"url": server_url.rstrip("/")}]
    return spec
