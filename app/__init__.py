"""The Spool web app: ``create_app()`` builds it; ``services()`` gives a request the shared services.

Blueprints: ``app.api.jobs``, ``app.api.speech``, ``app.api.models``, ``app.api.stream``, ``app.api.books``,
``app.api.system`` and ``app.web`` (the player page); each defines ``bp``.
"""

from __future__ import annotations

import dataclasses
import logging as pylogging  # not `logging`: the service's logging module is imported as well
from collections.abc import Mapping
from typing import Any

import redis as redis_lib
from flask import Flask, current_app, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from app import auth, origin, request_log
from app.schemas import ErrorBody, OpenAIErrorBody
from config.settings import Settings
from engine.exceptions import AssetError, SpoolError
from service import logging as spool_logging
from service.exceptions import ServiceUnavailableError, StorageError
from service.services import Services

log = pylogging.getLogger("spool.app")

#: Extension name under which the shared services hang on the app.
EXTENSION = "spool"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
}


#: What clients are told for errors whose own messages carry server paths or internal addresses.
PUBLIC_MESSAGES: dict[str, str] = {
    "storage_error": "The result storage is unavailable; retry in a moment (the server log has the details).",
    "asset_error": "The server's model files are not ready; the operator should run `spool models fetch`.",
}


def services() -> Services:
    """The shared services of the current app (settings, redis, keys, jobs, storage, streams, catalog)."""
    return current_app.extensions[EXTENSION]


def _settings_from(config: Settings | Mapping[str, Any] | None) -> Settings:
    """Settings from an object, a dict of overrides on top of the environment, or the environment alone."""
    if isinstance(config, Settings):
        return config
    base = Settings.from_env()
    if not config:
        return base
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    values.update(config)
    return Settings.from_mapping(values)


#: Paths of the OpenAI-compatible routes: their errors take OpenAI's shape, so the official SDKs raise
#: the matching exception (BadRequestError, NotFoundError, ...) with Spool's message, param and code.
OPENAI_PATH_PREFIXES: tuple[str, ...] = ("/v1/audio/", "/v1/models")


def is_openai_route() -> bool:
    """True while answering a request on an OpenAI-compatible path."""
    return has_request_context() and request.path.startswith(OPENAI_PATH_PREFIXES)


def _openai_error(code: str, message: str, status: int, details: Mapping[str, Any] | None):  # type: ignore[no-untyped-def]
    """``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape), Spool's details alongside."""
    body = OpenAIErrorBody(
        message=message,
        # 429: OpenAI's own rate-limit type, so clients that branch on it back off rather than give up.
        type="server_error" if status >= 500 else ("requests" if status == 429 else "invalid_request_error"),
        param=(details or {}).get("field"),
        code=code,
        details=dict(details) if details else None,
        request_id=(g.get("request_id") if g else None) or None,
    )
    fields = body.model_dump()
    for name in ("details", "request_id"):  # OpenAI's four fields are always sent, null or not
        if fields[name] is None:
            del fields[name]
    return jsonify({"error": fields}), status


def error_response(code: str, message: str, status: int, details: Mapping[str, Any] | None = None):
    """A JSON error body ``{"error": {"code", "message", "details"}}`` (OpenAI's on its routes) with its status."""
    if is_openai_route():
        return _openai_error(code, message, status, details)
    body = ErrorBody(
        code=code,
        message=message,
        details=dict(details) if details else None,
        request_id=(g.get("request_id") if g else None) or None,
    )
    # Only the envelope's empty fields are left out; None inside details is the caller's to send.
    fields = {name: value for name, value in body.model_dump().items() if value is not None}
    return jsonify({"error": fields}), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(SpoolError)
    def _spool_error(exc: SpoolError):  # type: ignore[no-untyped-def]
        status = getattr(exc, "http_status", None) or (503 if isinstance(exc, AssetError) else 400)
        if status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        if isinstance(exc, StorageError | AssetError):
            # Their messages name server paths, buckets and endpoints: the log has them, clients don't.
            kind = "storage_error" if isinstance(exc, StorageError) else "asset_error"
            return error_response(exc.code, PUBLIC_MESSAGES.get(exc.code, PUBLIC_MESSAGES[kind]), status)
        response, status = error_response(exc.code, exc.message, status, exc.details)
        retry_after = getattr(exc, "retry_after", None)  # quotas and limits (429)
        if retry_after:
            response.headers["Retry-After"] = str(int(retry_after))
        return response, status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        details: dict[str, Any] = {}
        if status == 404:
            message = f"No route {request.method} {request.path}; see /openapi.json for the API."
        elif status == 405:
            allowed = sorted(getattr(exc, "valid_methods", None) or [])
            message = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}."
            details["allowed"] = allowed
        elif status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request body is too large (limit {limit:,} bytes)." if limit else message
        elif status == 400 and "JSON" in (exc.description or ""):
            code, message = "malformed_json", "The body is not valid JSON."
        response, status = error_response(code, message, status, details)
        if status == 405:
            response.headers["Allow"] = ", ".join(details["allowed"])
        return response, status

    @app.errorhandler(redis_lib.RedisError)
    def _redis_error(exc: redis_lib.RedisError):  # type: ignore[no-untyped-def]
        log.error("redis unavailable: %s", exc)
        err = ServiceUnavailableError("The job store (Redis) is unreachable; retry in a moment.")
        return error_response(err.code, err.message, err.http_status)

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            "internal_error",
            "Spool hit an unexpected error; it has been logged. Quote the request id when reporting it.",
            500,
        )


def register_blueprints(app: Flask) -> list[str]:
    """Register every blueprint of the API and the player page; return their module names."""
    from app import web
    from app.api import book_fix, books, jobs, lexicons, models, speech, stream, system

    modules = (jobs, speech, models, system, stream, books, book_fix, lexicons, web)
    for module in modules:
        app.register_blueprint(module.bp)
    return [module.__name__ for module in modules]


def create_app(
    config: Settings | Mapping[str, Any] | None = None, *, services_: Services | None = None
) -> Flask:
    """Build the Flask app from settings (default: the ``SPOOL_*`` environment)."""
    settings = _settings_from(config)
    spool_logging.configure_logging(settings)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max(settings.max_upload_bytes, settings.max_body_bytes)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = services_ or Services(settings)
    app.spool_warm_up = app.extensions[EXTENSION].warm_up  # type: ignore[attr-defined]  (config/gunicorn.py)
    request_log.init_app(app)
    # Before auth: a cross-site request is refused first. An open Spool answers localhost only.
    origin.init_app(
        app, settings.allowed_origins, loopback_only=not settings.api_keys and not settings.allow_anonymous
    )
    auth.init_app(app, settings.api_keys)
    _register_errors(app)
    app.extensions["spool_blueprints"] = register_blueprints(app)
    return app


__all__ = ["create_app", "services", "error_response", "Services"]
