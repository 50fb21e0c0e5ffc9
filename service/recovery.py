"""Orphan recovery, run from every worker heartbeat: work whose worker stopped beating is sent again.

Jobs: a running job whose worker is gone is put back in the queue (only the caller whose requeue
wins sends it). Books: a batch marked ``running:<worker>`` for a dead worker is queued again (the
segment checkpoints make that safe), and a finished book whose assembly lock expired is assembled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from config import defaults
from service.books import BookNotFoundError, BookStore, _text
from service.states import FINISHED, BookState
from service.task_names import BOOK_ASSEMBLE

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.recovery")


def recover_jobs(svc: Services) -> list[str]:
    """Requeue running jobs whose worker stopped beating (killed, host lost); return their ids.

    Without this a job whose worker died would wait for the broker's visibility timeout (hours) before
    its unacknowledged message is handed out again. Only the caller whose requeue wins sends the task.
    """
    live = {w["name"] for w in svc.workers.live()}
    recovered = []
    for job in svc.jobs.running_jobs():
        if not job.worker or job.worker in live:
            continue
        # A worker beats before its first task, so a job started within one TTL has a live worker.
        if job.started_at and time.time() - job.started_at < svc.workers.ttl:
            continue
        if svc.jobs.requeue_orphan(job, job.worker):
            log.warning("job %s was running on %s, which stopped beating: requeued", job.id, job.worker)
            svc.enqueue(job, job.request_id)
            recovered.append(job.id)
    return recovered


def recover_books(store: BookStore, live_workers: set[str], interval: float) -> list[tuple[str, int]]:
    """Queue again the batches of workers that stopped beating; restart stalled assemblies.

    Only one worker per ``interval`` does this (a short Redis lock), so a batch is re-queued once.
    """
    if not store.redis.set(store.keys.books_recovery(), "1", nx=True, ex=max(1, int(interval))):
        return []
    requeued: list[tuple[str, int]] = []
    for raw in store.redis.smembers(store.keys.books_active()):
        book_id = _text(raw)
        try:
            rec = store.record(book_id)
        except BookNotFoundError:
            store.redis.srem(store.keys.books_active(), book_id)
            continue
        if rec.state in FINISHED:
            store.redis.srem(store.keys.books_active(), book_id)
            continue
        if not rec.is_planned:
            # A planner that died mid-plan: plan again (planning is idempotent until it completes).
            if rec.planner and rec.planner not in live_workers:
                key = store.keys.book(book_id)
                if _text(store.redis.hget(key, "planner")) == rec.planner:
                    store.redis.hset(key, "planner", "")
                    store.send_plan(book_id)
                    log.warning(
                        "book %s was being planned on %s, which stopped beating: requeued",
                        book_id,
                        rec.planner,
                    )
            continue
        batches = store.redis.hgetall(store.keys.book_batches(book_id))
        for field, value in batches.items():
            status = _text(value)
            if not status.startswith("running:") or status[len("running:") :] in live_workers:
                continue
            batch = int(_text(field))
            # Compare-and-set: only the recovery that still sees the dead owner re-queues.
            if store.redis.hget(store.keys.book_batches(book_id), str(batch)) == value:
                store.redis.hset(store.keys.book_batches(book_id), str(batch), "queued")
                store.send_batch(book_id, batch)
                requeued.append((book_id, batch))
                log.warning(
                    "book %s batch %d was on %s, which stopped beating: requeued", book_id, batch, status
                )
        if (
            rec.state in (BookState.RENDERING, BookState.ASSEMBLING)
            and not store.redis.exists(store.keys.book_lock(book_id))
            and int(store.redis.scard(store.keys.book_done(book_id))) >= rec.segments_total
            and store.try_assembly(book_id)
        ):
            store.svc.send_task(
                BOOK_ASSEMBLE,
                [book_id],
                queue=store.svc.settings.queue,
                priority=defaults.PRIORITIES["low"],
            )
    return requeued
