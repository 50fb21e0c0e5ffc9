"""The webhook task: ``spool.webhook(job_id, attempt)`` delivers one finished job's webhook.

A light task on its own queue (``SPOOL_WEBHOOK_QUEUE``): it loads no model, and a slow receiver
holds it at most ``SPOOL_WEBHOOK_TIMEOUT`` seconds. A failed attempt is sent again after the
backoff, with the attempt number raised, until ``SPOOL_WEBHOOK_ATTEMPTS``.
"""

from __future__ import annotations

from typing import Any

from service.task_names import WEBHOOK
from service.webhooks import deliver
from tasks import worker
from tasks.celery_app import celery_app


@celery_app.task(name=WEBHOOK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def send_webhook(self: Any, job_id: str, attempt: int = 1) -> None:
    """Deliver attempt ``attempt`` of job ``job_id``'s webhook; schedule the next one if it failed."""
    delay = deliver(worker.get_services(), job_id, attempt)
    if delay is not None:
        raise self.retry(args=[job_id, attempt + 1], countdown=delay)
