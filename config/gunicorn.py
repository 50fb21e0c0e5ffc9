"""Gunicorn configuration for the Spool web app: ``gunicorn -c python:config.gunicorn 'app:create_app()'``.

Threaded workers, because ``POST /v1/audio/speech`` waits for its job and the
chunk streams stay open while a job renders: each holds one thread, not a process.
Bind address, worker and thread counts come from ``SPOOL_HOST``/``SPOOL_PORT``,
``SPOOL_WEB_WORKERS`` and ``SPOOL_WEB_THREADS`` (command-line flags override them).
"""

from __future__ import annotations

import os

from config import defaults

bind = f"{os.environ.get('SPOOL_HOST', defaults.HOST)}:{os.environ.get('SPOOL_PORT', defaults.PORT)}"
workers = int(os.environ.get("SPOOL_WEB_WORKERS", defaults.WEB_WORKERS))
threads = int(os.environ.get("SPOOL_WEB_THREADS", defaults.WEB_THREADS))
# Streams (audio streams, SSE, waiting speech requests) hold a thread each for as long as they last, so
# they are capped below the thread count: per process SPOOL_MAX_STREAMS_PER_PROCESS (default 16 - 4 = 12)
# and in all SPOOL_MAX_STREAMS (default 2 processes x 12 = 24 of the 32 threads). However the listeners
# spread over the processes, each keeps at least 4 threads (8 in all) for the API; beyond a cap the
# stream answers 429 with Retry-After. Raising SPOOL_WEB_THREADS alone adds API threads; raise the
# stream caps with it to admit more listeners.
worker_class = "gthread"
# Long enough for a speech request waiting on its job; streams send data well within it.
timeout = int(float(os.environ.get("SPOOL_SPEECH_TIMEOUT", defaults.SPEECH_TIMEOUT))) + 60
graceful_timeout = 30
keepalive = 5
# Request ids are logged by the app itself; the access log adds the client view.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms req=%({x-request-id}o)s'
loglevel = os.environ.get("SPOOL_LOG_LEVEL", defaults.LOG_LEVEL).lower()
# Behind a reverse proxy, trust X-Forwarded-* headers from its address only: set FORWARDED_ALLOW_IPS
# to the proxy's address (never "*", which lets any client claim to be https or another host).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server: object) -> None:
    """Refuse to listen on a reachable address with no API keys (config/exposure.py)."""
    from config.exposure import ExposureError, check_bind
    from config.settings import Settings

    binds = getattr(getattr(server, "cfg", None), "bind", None) or [bind]
    try:
        check_bind(binds, Settings.from_env())
    except ExposureError as exc:
        raise SystemExit(f"spool: {exc}") from None


def post_worker_init(worker: object) -> None:
    """Connect each web process to Redis, the broker and storage before it takes requests."""
    # The app hands gunicorn its warm-up as an attribute, so this config module imports nothing of Spool's.
    warm_up = getattr(getattr(worker, "wsgi", None), "spool_warm_up", None)
    if callable(warm_up):
        warm_up()
