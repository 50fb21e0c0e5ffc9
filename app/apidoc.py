"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the routes and the API's models.

A view declares what it takes and answers with :func:`operation` (request body model, query model,
responses by status as a model or ``"audio"`` and a description, errors by status); the schemas are the pydantic
models of ``app/schemas.py``, emitted by pydantic itself. Every route the app serves is listed: one
without a declaration gets a minimal entry from its rule and docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.schemas import Error
from engine.audio import AUDIO_FORMATS

#: Version of the HTTP API described.
API_VERSION = "1.0.0"

#: Where a response is audio rather than JSON.
AUDIO = "audio"

#: Where a response is audio, or Server-Sent Events when the request asks for them.
AUDIO_OR_SSE = "audio-or-sse"

#: Where a response is Server-Sent Events.
SSE = "sse"

REF_TEMPLATE = "#/components/schemas/{model}"

#: Parameters of path segments, by the rule's argument name (any other is a plain string).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {
        "description": "Job id (32 hex digits).",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    },
    "book_id": {
        "description": "Book id (32 hex digits).",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    },
    "lexicon_id": {
        "description": "Lexicon id (32 hex digits).",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    },
}

#: Header parameters a view may take, by name.
HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "Retrying with the same key and body returns the same job instead of a new one.",
        "schema": {"type": "string", "maxLength": 255},
    },
    "X-Request-ID": {
        "description": "Your id for this request; echoed back and written on every log line.",
        "schema": {"type": "string", "maxLength": 128},
    },
    "Range": {"schema": {"type": "string"}, "example": "bytes=0-1023"},
}

#: The error every authenticated operation may answer.
AUTH_ERROR = {401: "Missing or invalid API key."}

#: Headers of the operations that submit a job.
SUBMIT_HEADERS: tuple[str, ...] = ("Idempotency-Key", "X-Request-ID")

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """What one view takes and answers, for the document."""

    tag: str
    responses: Mapping[int, str | tuple[type[BaseModel] | str, str]]
    #: Error responses by status, each an :class:`~app.schemas.Error` body with this description.
    errors: Mapping[int, str] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    #: A multipart form body (an upload) instead of JSON.
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()
    response_headers: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    public: bool = False
    operation_id: str | None = None
    #: The body of every error response (the OpenAI routes answer in OpenAI's shape).
    error_model: type[BaseModel] = Error


def operation(**kwargs: Any) -> Callable[[View], View]:
    """Attach an :class:`Operation` to a view (``@operation(tag=..., responses={...})``)."""

    def attach(view: View) -> View:
        view.openapi_operation = Operation(**kwargs)  # type: ignore[attr-defined]
        return view

    return attach


def openapi_path(rule: str) -> str:
    """Convert a Flask rule (``/v1/jobs/<job_id>``) into an OpenAPI path (``/v1/jobs/{job_id}``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _summary(view: Callable[..., Any] | None, fallback: str) -> str:
    """The first line of a view's docstring."""
    lines = (getattr(view, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else fallback


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _response(answer: str | tuple[type[BaseModel] | str, str], headers: tuple[str, ...]) -> dict[str, Any]:
    """One response object: a description, and JSON of a model, audio, events, or nothing."""
    kind, description = (None, answer) if isinstance(answer, str) else answer
    response: dict[str, Any] = {"description": description}
    if kind in (AUDIO, SSE, AUDIO_OR_SSE):
        audio = {f.content_type: {} for f in AUDIO_FORMATS.values()} if kind != SSE else {}
        response["content"] = audio | ({"text/event-stream": {}} if kind != AUDIO else {})
    elif isinstance(kind, type):
        response["content"] = {"application/json": {"schema": _ref(kind)}}
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return response


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Query parameters from a model's fields (their JSON schemas, descriptions lifted out)."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query"}
        if "description" in prop:
            param["description"] = prop.pop("description")
        param["schema"] = prop
        params.append(param)
    return params


def _operation_object(op: Operation, endpoint: str, summary: str) -> dict[str, Any]:
    """The OpenAPI operation of a declared view."""
    parameters = [{"name": h, "in": "header", "required": False, **HEADERS[h]} for h in op.headers]
    if op.query is not None:
        parameters = _query_parameters(op.query) + parameters
    errors = dict(op.errors) if op.public else {**op.errors, **AUTH_ERROR}
    responses = {**op.responses, **{status: (op.error_model, text) for status, text in errors.items()}}
    item: dict[str, Any] = {
        "operationId": op.operation_id or endpoint.rsplit(".", 1)[-1],
        "tags": [op.tag],
        "summary": summary,
    }
    if parameters:
        item["parameters"] = parameters
    if op.body is not None:
        item["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.form is not None:
        item["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": _ref(op.form)}},
        }
    item["responses"] = {
        str(status): _response(responses[status], tuple(op.response_headers.get(status, ())))
        for status in sorted(responses)
    }
    if op.public:
        item["security"] = []
    return item


def _models(operations: list[Operation]) -> list[type[BaseModel]]:
    """Every model the operations name, in first-seen order (the error body always)."""
    seen: dict[type[BaseModel], None] = {Error: None}
    for op in operations:
        seen[op.error_model] = None
        for body in (op.body, op.form):
            if body is not None:
                seen[body] = None
        for answer in op.responses.values():
            if isinstance(answer, tuple) and isinstance(answer[0], type):
                seen[answer[0]] = None
    return list(seen)


def build_spec(app: Flask, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of every route ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    operations = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions.get(rule.endpoint)
        op: Operation | None = getattr(view, "openapi_operation", None)
        item = paths.setdefault(openapi_path(rule.rule), {})
        if rule.arguments:
            item["parameters"] = [
                {
                    "name": arg,
                    "in": "path",
                    "required": True,
                    **PATH_PARAMETERS.get(arg, {"schema": {"type": "string"}}),
                }
                for arg in sorted(rule.arguments)
            ]
        summary = _summary(view, rule.endpoint)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if op is not None:
                operations.append(op)
                item[method.lower()] = _operation_object(op, rule.endpoint, summary)
            else:
                item[method.lower()] = {
                    "operationId": rule.endpoint.replace(".", "_"),
                    "summary": summary,
                    "responses": {"200": {"description": "OK"}},
                }
    models = _models(operations)
    _, top = models_json_schema(
        [(m, "validation" if m.__name__.endswith("Request") else "serialization") for m in models],
        ref_template=REF_TEMPLATE,
    )
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Spool",
            "version": API_VERSION,
            "description": "Self-hosted long-form text to speech: submit text, poll the job, download "
            'the audio. Errors are JSON: {"error": {"code", "message", "details"}}; on the OpenAI-compatible '
            'routes (tag openai) they take OpenAI\'s shape, {"error": {"message", "type", "param", "code"}}.',
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from SPOOL_API_KEYS as a bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "tags": [{"name": "jobs"}, {"name": "books"}, {"name": "lexicons"}, {"name": "openai"}, {"name": "system"}],
    }
    if app.extensions["spool"].settings.api_keys:
        spec["security"] = [{"bearer": []}, {"apiKey": []}]
    if server_url:
        spec["servers"] = [{"url": server_url.rstrip("/")}]
    return spec
