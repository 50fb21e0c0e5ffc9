"""Celery configuration derived from :class:`config.settings.Settings`.

Priority lane: Redis priority steps. Every device-class queue (``cpu``, ``gpu``)
is split by kombu into one Redis list per step in ``PRIORITY_STEPS``; a worker
pops the lists in step order (0 first, across all the queues it consumes), so a
``high`` job overtakes every ``normal`` one on the same queue, and interactive
jobs overtake ``low`` book segments, without a separate queue to subscribe to.
"""

from __future__ import annotations

from typing import Any

from config import defaults
from config.settings import Settings


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu Redis transport options shared by producers (web) and consumers (workers)."""
    options: dict[str, Any] = {
        # Must outlast the longest task, or a message still being worked on is handed out again.
        "visibility_timeout": settings.visibility_timeout,
        "priority_steps": list(defaults.PRIORITY_STEPS),
        # Keep the given order (priority steps first) instead of rotating queues round-robin.
        "queue_order_strategy": "priority",
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings (lower-case names) for a web or worker process."""
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": broker_transport_options(settings),
        "broker_connection_retry_on_startup": True,
        # Job state lives in the job store; Celery results would only duplicate it.
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        "task_default_priority": defaults.PRIORITIES[defaults.PRIORITY],
        "task_queue_max_priority": max(defaults.PRIORITY_STEPS),
        # A task is acknowledged only once done, and re-queued if its worker dies mid-way.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_heartbeat": 0,
        "timezone": "UTC",
        "enable_utc": True,
    }
