"""Per-request logging: every request gets an id (echoed as ``X-Request-ID``) and one log line."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from service.logging import clean_request_id, job_id_var, request_id_var


def init_app(app: Flask) -> None:
    """Register the hooks that give every request an id and log one line per request."""
    log = logging.getLogger("spool.http")

    @app.before_request
    def _start_request() -> None:
        g.request_id = clean_request_id(request.headers.get("X-Request-ID"))
        g.request_started = time.perf_counter()
        request_id_var.set(g.request_id)
        job_id_var.set("-")

    @app.after_request
    def _finish_request(response):  # type: ignore[no-untyped-def]
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        started = g.get("request_started")
        elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
        log.info("%s %s -> %s (%.1f ms)", request.method, request.path, response.status_code, elapsed)
        return response
