"""The Celery app workers run: ``celery -A tasks.celery_app worker -Q cpu --pool=solo``.

Its configuration is read from the ``SPOOL_*`` environment on first use (not at
import), through :func:`config.celery.celery_config`. The web process does not
use this module: it sends tasks by name (``service/task_names.py``) through ``service.services.Services.celery``,
built from the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery

from config.celery import celery_config
from config.settings import Settings

#: Task modules the worker imports (Celery loads them once the worker boots).
TASK_MODULES: tuple[str, ...] = ("tasks.synthesis", "tasks.books", "tasks.webhooks")


class _EnvConfig(Mapping[str, Any]):
    """Celery configuration computed from the environment the first time Celery reads it."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._values is None:
            self._values = celery_config(Settings.from_env())
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings``, or lazily from the environment when None."""
    app = Celery("spool", include=list(TASK_MODULES))
    if settings is None:
        app.config_from_object(_EnvConfig())
    else:
        app.conf.update(celery_config(settings))
    return app


#: The worker's Celery app (``-A tasks.celery_app``).
celery_app = create_celery()
app = celery_app

# Connect the per-process engine and heartbeat signals before the worker boots (they fire before
# Celery imports the task modules).
from tasks import worker as _worker  # noqa: E402, F401
