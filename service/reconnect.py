"""Riding out a Redis restart: a write that fails for want of a connection waits for Redis and is retried.

A worker that loses Redis mid-job must not drop the job (the render it has done is in memory): each
job-store write goes through :func:`with_reconnect`, which retries on connection errors with backoff
until Redis answers again, for at most the ``redis_retry_window`` setting. Past it the error is raised
and the job is left to the reconciliation sweep (``service.recovery``), which queues it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis as redis_lib

log = logging.getLogger("spool.reconnect")

T = TypeVar("T")

#: First and longest pause between two tries, in seconds.
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0

#: The errors that mean "Redis is not there right now" (not a bad command).
TRANSIENT = (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError)


def with_reconnect(window: float, call: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``call(*args, **kwargs)``; on a connection error retry with backoff for up to ``window`` seconds."""
    deadline = time.monotonic() + window
    pause = FIRST_PAUSE
    warned = False
    while True:
        try:
            result = call(*args, **kwargs)
        except TRANSIENT as exc:
            if time.monotonic() + pause > deadline:
                log.error("Redis still unreachable after %.0f s (%s); giving up this write", window, exc)
                raise
            if not warned:
                log.warning("Redis unreachable (%s); retrying for up to %.0f s", exc, window)
                warned = True
            time.sleep(pause)
            pause = min(LONGEST_PAUSE, pause * 2)
            continue
        if warned:
            log.info("Redis is back; write done")
        return result
