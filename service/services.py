"""The services the web app and the workers share, built once per process from Settings."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import redis as redis_lib

from config import defaults
from config.settings import Settings
from engine.catalog import VoiceCatalog
from service.books import BookStore
from service.exceptions import EnqueueError
from service.heartbeats import WorkerRegistry
from service.jobs import Job, JobSpec, JobStore
from service.keys import Keys, new_id
from service.lexicons import LexiconStore, VocabCache
from service.quotas import Quotas
from service.storage import Storage, storage_from_settings
from service.stream import ChunkStream
from service.task_names import SYNTHESIZE

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("spool.services")


class Services:
    """Settings, Redis, keys, job and book stores, storage, chunk streams, catalog and the task producer."""

    def __init__(
        self, settings: Settings, *, redis: redis_lib.Redis | None = None, storage: Storage | None = None
    ) -> None:
        self.settings = settings
        # Binary-safe client: chunk streams carry raw PCM; the job store decodes its own strings.
        self.redis = redis or redis_lib.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, health_check_interval=30
        )
        self.keys = Keys(settings.key_prefix)
        self.jobs = JobStore(self.redis, self.keys, settings.job_ttl)
        self.workers = WorkerRegistry(self.redis, self.keys, settings.heartbeat_ttl)
        self.quotas = Quotas(self.redis, self.keys, settings)
        self.books = BookStore(self)  # one per process, so each book's plan is read from storage once
        self.catalog = VoiceCatalog(settings.assets_path)
        self.lexicons = LexiconStore(self.redis, self.keys, VocabCache(settings.assets_path))
        self._storage = storage
        # Cheap to build (no round trip until first use), so not lazy.
        self.streams = ChunkStream(
            self.redis,
            self.keys,
            maxlen=settings.stream_maxlen,
            ttl=settings.stream_ttl,
            max_bytes=settings.stream_max_bytes,
        )
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    @property
    def storage(self) -> Storage:
        """The result storage (connected on first use)."""
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = storage_from_settings(self.settings)
        return self._storage

    @property
    def celery(self) -> Celery:
        """A Celery app configured from these settings, used to send tasks by name."""
        if self._celery is None:
            with self._lock:
                if self._celery is None:
                    from celery import Celery

                    from config.celery import celery_config

                    app = Celery("spool", set_as_current=False)
                    app.conf.update(celery_config(self.settings))
                    self._celery = app
        return self._celery

    def warm_up(self) -> dict[str, bool]:
        """Connect to Redis, the broker and storage now, not on a user's first request.

        Called in each web worker process after it loads the app (``config/gunicorn.py``):
        building the Celery producer, its first broker connection and the voice tables cost the
        first job submitted to each process over 100 ms otherwise. Returns what is ready;
        a part that is down is logged, never raised, so the web still starts and answers it.
        """
        ready: dict[str, bool] = {}
        checks = {
            "redis": self.redis.ping,
            "broker": self._connect_broker,
            "storage": lambda: self.storage,
            "streams": lambda: self.streams,
            "voices": lambda: self.catalog.store,
        }
        for name, check in checks.items():
            try:
                check()
                ready[name] = True
            except Exception as exc:  # a failed warm-up only means the first request does it
                log.warning("warm-up: %s not ready (%s); the first request will retry it", name, exc)
                ready[name] = False
        return ready

    def _connect_broker(self) -> None:
        """Open one pooled broker connection (what ``send_task`` uses) and give it back."""
        with self.celery.pool.acquire(block=True, timeout=5) as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
        self.celery.backend  # noqa: B018  (send_task builds the result backend on first use)

    def send_task(
        self,
        name: str,
        args: list[Any],
        *,
        queue: str,
        priority: int,
        task_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish a task by name, retrying briefly if the broker connection blips."""
        self.celery.send_task(
            name,
            args=args,
            queue=queue,
            priority=priority,
            task_id=task_id,
            headers=headers or {},
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )

    def submit(
        self,
        spec: JobSpec,
        *,
        owner: str,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        kind: str = "job",
    ) -> tuple[Job, bool]:
        """Store a job, then enqueue it; returns (job, created). A job that cannot be enqueued is failed.

        The owner's lane and quotas are checked first (LaneNotAllowedError, QuotaExceededError); a
        retried request whose Idempotency-Key already names a job is answered without charging again.
        """
        self.quotas.check_lane(owner, spec.priority)
        job_id = new_id()
        replay = bool(idempotency_key) and bool(self.redis.exists(self.keys.idempotency(owner, idempotency_key)))
        if not replay:
            self.quotas.admit_job(owner, job_id, len(spec.text))
        try:
            job, created = self.jobs.create(
                spec,
                owner=owner,
                queue=self.settings.queue,
                idempotency_key=idempotency_key,
                request_id=request_id,
                kind=kind,
                job_id=job_id,
            )
        except BaseException:
            if not replay:
                self.quotas.release_job(owner, job_id, len(spec.text))
            raise
        if not created:
            if not replay:
                self.quotas.release_job(owner, job_id, len(spec.text))
            if job.state == "queued" and job.enqueued_at is None:
                # Stored by an earlier request that never got to queue it (a crash in between): the
                # client's retry with the same Idempotency-Key queues it now.
                log.warning("job %s was stored but never queued; queuing it on this retry", job.id)
                self.enqueue(job, request_id)
            return job, False
        if not replay:
            self.quotas.confirm_job(owner, job.id)
        try:
            self.enqueue(job, request_id, step=self.lane_step(job))
        except Exception as exc:  # the broker is down: the job is stored, so say so rather than lose it
            log.exception("could not enqueue job %s", job.id)
            message = f"The job was stored but could not be queued ({type(exc).__name__}); submit it again."
            try:
                self.jobs.fail(job.id, EnqueueError.code, message)
            except redis_lib.RedisError:
                log.exception("could not mark job %s failed", job.id)
            raise EnqueueError(message, job_id=job.id) from exc
        return job, True

    def lane_step(self, job: Job) -> int:
        """The broker step a job goes to: its lane's, or the lane's overflow once its key has a burst in flight.

        A key with more than ``FAIR_SHARE_JOBS`` unfinished jobs (its concurrency-quota set) sends the
        next ones to the overflow step, so another key's job of the same lane overtakes that burst.
        """
        base = defaults.PRIORITIES.get(job.priority, defaults.PRIORITIES[defaults.PRIORITY])
        overflow = defaults.OVERFLOW_PRIORITIES.get(job.priority)
        if overflow is None or not defaults.FAIR_SHARE_JOBS:
            return base
        active = int(self.redis.zcard(self.keys.owner_active_jobs(job.owner)))
        return overflow if active > defaults.FAIR_SHARE_JOBS else base

    def enqueue(self, job: Job, request_id: str | None = None, step: int | None = None) -> None:
        """Send a stored job's synthesis task (task id = job id, so redeliveries match).

        ``step``: the broker step (:meth:`lane_step`, chosen once, at submission); None sends it at its
        lane's own step, as recovery and hand-backs do.
        """
        if step is None:
            step = defaults.PRIORITIES.get(job.priority, defaults.PRIORITIES[defaults.PRIORITY])
        self.send_task(
            SYNTHESIZE,
            [job.id],
            queue=job.queue,
            priority=step,
            task_id=job.id,
            headers={"spool_request_id": request_id or "-"},
        )
        self.jobs.mark_enqueued(job.id, step)

    def close(self) -> None:
        """Release connections (tests, CLI)."""
        if self._celery is not None:
            self._celery.close()
        self.redis.close()
