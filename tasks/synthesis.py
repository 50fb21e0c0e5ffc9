"""The synthesis task: ``spool.synthesize(job_id)`` renders one job with this worker's engine."""

from __future__ import annotations

import logging
from typing import Any

import redis as redis_lib

from service.lanes import release_yield
from service.render import run_synthesis
from service.task_names import SYNTHESIZE
from tasks import worker
from tasks.celery_app import celery_app

log = logging.getLogger("spool.synthesis")

#: Seconds before a job whose store was unreachable is tried again, and how many times.
REDIS_RETRY_DELAY = 10
REDIS_RETRIES = 30


@celery_app.task(name=SYNTHESIZE, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def synthesize(self: Any, job_id: str) -> str | None:
    """Render job ``job_id`` with this worker's engine; returns the storage key of its audio."""
    worker.set_current_job(job_id)
    svc = worker.get_services()
    try:
        # A worker that gave way to waiting work has found it: its claim ends (see service.lanes).
        for queue in svc.settings.worker_queues:
            release_yield(svc, queue, worker.worker_name())
    except redis_lib.RedisError:
        log.debug("could not release the yield claim", exc_info=True)
    try:
        return run_synthesis(
            worker.get_services(),
            job_id,
            worker.get_engine,
            worker_name=worker.worker_name(),
            should_stop=worker.stop_requested,
        )
    except redis_lib.RedisError as exc:
        # The job store was unreachable even for recording the failure: try the job again later
        # rather than leave it marked running forever.
        log.warning("job store unreachable (%s); retrying job %s", exc, job_id)
        raise self.retry(exc=exc, countdown=REDIS_RETRY_DELAY, max_retries=REDIS_RETRIES) from exc
    finally:
        worker.set_current_job(None)
