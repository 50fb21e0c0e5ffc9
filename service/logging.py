"""Logging with the request id and job id on every line, in the web app and in workers.

The ids live in context variables: the web app's request hooks (``app/request_log.py``) set the
request id (the client's ``X-Request-ID`` when it is well-formed, else a new one, echoed in the
response), the API sets the job id once it knows it, and the synthesis task sets
both from the job it runs. A filter copies them onto every log record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings

#: Request id of the current request or task ("-" when none).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("spool_request_id", default="-")

#: Job id the current request or task works on ("-" when none).
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("spool_job_id", default="-")

#: A client-supplied X-Request-ID is kept only when it looks like an id (it ends up in logs).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s job=%(job_id)s] %(message)s"

_HANDLER_NAME = "spool"


class ContextFilter(logging.Filter):
    """Copy the request and job ids from the context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``request_id`` and ``job_id`` attributes (never drops a record)."""
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "job_id"):
            record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as JSON with time, level, logger, ids and message."""
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str:
    """Return a client's request id if it is well-formed, else a new one."""
    if value and REQUEST_ID_RE.match(value):
        return value
    return new_request_id()


def configure_logging(
    settings: Settings | None = None, *, level: str | None = None, fmt: str | None = None
) -> None:
    """Install Spool's handler on the root logger once (later calls only update level and format)."""
    level_name = (level or (settings.log_level if settings else "INFO")).upper()
    fmt_name = fmt or (settings.log_format if settings else "text")
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt_name == "json" else logging.Formatter(TEXT_FORMAT))
    root.setLevel(getattr(logging, level_name, logging.INFO))
    # Every handler, including ones others installed (pytest, gunicorn), gets the ids.
    for other in root.handlers:
        if not any(isinstance(f, ContextFilter) for f in other.filters):
            other.addFilter(ContextFilter())


@contextlib.contextmanager
def log_context(*, request_id: str | None = None, job_id: str | None = None) -> Iterator[None]:
    """Set the request and/or job id for the duration of a block."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(job_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind_job(job_id: str) -> None:
    """Mark the rest of the current request as working on ``job_id``."""
    job_id_var.set(job_id)
