"""The shared services: warm-up of a web process before its first request."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

from app import EXTENSION, create_app
from config import gunicorn as gunicorn_config
from config.settings import Settings
from service.services import Services
from tests.fixtures.service import free_port


def test_warm_up_connects_everything_a_request_needs(settings: Settings) -> None:
    svc = Services(settings)
    try:
        ready = svc.warm_up()
        assert ready == {"redis": True, "broker": True, "storage": True, "streams": True, "voices": True}
        # What the first POST would otherwise build: the producer (its broker connection is the
        # "broker" above) and the voice tables.
        assert svc._celery is not None and svc.catalog.kokoro._store is not None
    finally:
        svc.close()


def test_warm_up_with_redis_down_reports_and_does_not_raise(settings: Settings) -> None:
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    svc = Services(down)
    try:
        started = time.monotonic()
        ready = svc.warm_up()
        assert ready["redis"] is False and ready["broker"] is False
        assert ready["storage"] is True  # S3 does not depend on Redis
        assert time.monotonic() - started < 30, "a dead broker must not hold the web process for long"
    finally:
        svc.close()


def test_gunicorn_warms_each_web_process(settings: Settings) -> None:
    app = create_app(settings)
    svc = app.extensions[EXTENSION]
    try:
        assert svc._celery is None
        gunicorn_config.post_worker_init(SimpleNamespace(wsgi=app))
        assert svc._celery is not None and svc.catalog.kokoro._store is not None
    finally:
        svc.close()
