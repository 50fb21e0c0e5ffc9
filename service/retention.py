"""Retention: deleting a finished job's or book's stored files and Redis state, and the periodic sweep.

* :func:`purge_job` (``DELETE /v1/jobs/<id>`` of a finished job): everything under ``jobs/<id>/`` in
  storage (audio, stream replay, chunk index) and the job's hash, chunk stream and index entries.
* :func:`purge_book` (``DELETE /v1/books/<id>`` of a finished book): everything under ``books/<id>/``
  (source, plan, cover, outputs), the book's Redis state, and the segment checkpoints no other book
  uses. Checkpoints are content-keyed and shared (the same text, voice and speed renders once), so
  each book records the checkpoints it used (``Keys.book_checkpoints``) and a reference count per
  checkpoint (``Keys.checkpoint_refs``) says how many books use it; a purge deletes those it brings to 0.
* :func:`sweep` (every worker's heartbeat; one worker per ``SPOOL_SWEEP_INTERVAL`` under a lock):
  stored job and book files whose newest object is older than ``SPOOL_RETENTION_DAYS``, and checkpoints
  older than ``SPOOL_CHECKPOINT_RETENTION_DAYS`` that no book in flight uses. Unfinished jobs and books
  in flight are never swept.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from service.keys import check_id, is_id
from service.states import JOB_STATES

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.retention")

#: Seconds in a day.
DAY = 86400.0

# KEYS: the book's checkpoint set, the reference counts. ARGV: checkpoint key.
_REFERENCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
return 1
"""

# KEYS: the reference counts. ARGV: checkpoint keys. Returns the keys no book references any more.
_RELEASE = """
local orphans = {}
for _, key in ipairs(ARGV) do
  if redis.call('HINCRBY', KEYS[1], key, -1) <= 0 then
    redis.call('HDEL', KEYS[1], key)
    table.insert(orphans, key)
  end
end
return orphans
"""


def reference_checkpoint(svc: Services, book_id: str, key: str) -> None:
    """Record that ``book_id`` uses checkpoint ``key`` (counted once per book)."""
    svc.redis.eval(_REFERENCE, 2, svc.keys.book_checkpoints(book_id), svc.keys.checkpoint_refs(), key)


def purge_job(svc: Services, job: Any) -> int:
    """Delete a finished job's stored files and Redis state; return how many stored objects went."""
    job_id = check_id(job.id, "job id")
    removed = svc.storage.delete_prefix(svc.keys.storage_key("jobs", job_id) + "/")
    keys = svc.keys
    with svc.redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.job(job_id), keys.job_chunks(job_id), keys.job_chunks_info(job_id))
        pipe.zrem(keys.jobs_by_created(), job_id)
        for state in JOB_STATES:
            pipe.zrem(keys.jobs_in_state(state), job_id)
        pipe.zrem(keys.owner_jobs(job.owner), job_id)
        pipe.zrem(keys.queued(job.queue), job_id)
        pipe.zrem(keys.owner_active_jobs(job.owner), job_id)
        pipe.execute()
    log.info("job %s purged: %d stored object(s)", job_id, removed)
    return removed


def purge_book(svc: Services, book_id: str, owner: str) -> int:
    """Delete a finished book's files, unshared checkpoints and Redis state; return stored objects removed."""
    book_id = check_id(book_id, "book id")
    keys = svc.keys
    removed = svc.storage.delete_prefix(keys.storage_key("books", book_id) + "/")
    used = sorted(m.decode() for m in svc.redis.smembers(keys.book_checkpoints(book_id)))
    orphans = svc.redis.eval(_RELEASE, 1, keys.checkpoint_refs(), *used) if used else []
    for key in orphans:
        svc.storage.delete(key.decode() if isinstance(key, bytes) else key)
    removed += len(orphans)
    with svc.redis.pipeline(transaction=True) as pipe:
        pipe.delete(
            keys.book(book_id),
            keys.book_segments(book_id),
            keys.book_chapters(book_id),
            keys.book_done(book_id),
            keys.book_lock(book_id),
            keys.book_batches(book_id),
            keys.book_renders(book_id),
            keys.book_checkpoints(book_id),
        )
        pipe.zrem(keys.books_by_created(), book_id)
        pipe.zrem(keys.owner_books(owner), book_id)
        pipe.srem(keys.books_active(), book_id)
        pipe.zrem(keys.owner_active_books(owner), book_id)
        pipe.execute()
    svc.books._plans.pop(book_id, None)
    log.info("book %s purged: %d stored object(s), %d of %d checkpoint(s)", book_id, removed, len(orphans), len(used))
    return removed


def _groups(listing: list[tuple[str, float]]) -> dict[str, float]:
    """``area/id`` prefixes of a listing with the time of their newest object."""
    newest: dict[str, float] = {}
    for key, modified in listing:
        area, _, rest = key.partition("/")
        group = f"{area}/{rest.partition('/')[0]}"
        newest[group] = max(newest.get(group, 0.0), modified)
    return newest


def sweep(svc: Services, *, now: float | None = None) -> dict[str, int]:
    """Delete stored files past their retention; return how many objects went, per area."""
    now = time.time() if now is None else now
    settings = svc.settings
    removed = {"jobs": 0, "books": 0, "segments": 0}
    if settings.retention_days > 0:
        cutoff = now - settings.retention_days * DAY
        for area in ("jobs", "books"):
            for group, newest in _groups(svc.storage.list_modified(area + "/")).items():
                item_id = group.partition("/")[2]
                if newest >= cutoff or _in_flight(svc, area, item_id):
                    continue
                removed[area] += svc.storage.delete_prefix(group + "/")
    if settings.checkpoint_retention_days > 0:
        cutoff = now - settings.checkpoint_retention_days * DAY
        needed: set[str] = set()
        for raw in svc.redis.smembers(svc.keys.books_active()):
            needed.update(m.decode() for m in svc.redis.smembers(svc.keys.book_checkpoints(raw.decode())))
        for key, modified in svc.storage.list_modified("segments/"):
            if modified < cutoff and key not in needed:
                svc.storage.delete(key)
                svc.redis.hdel(svc.keys.checkpoint_refs(), key)
                removed["segments"] += 1
    if any(removed.values()):
        log.info("retention sweep removed %s", removed)
    return removed


def _in_flight(svc: Services, area: str, item_id: str) -> bool:
    """True for an unfinished job or a book in flight (never swept, however old its files)."""
    if area == "books":
        return bool(svc.redis.sismember(svc.keys.books_active(), item_id))
    state = svc.redis.hget(svc.keys.job(item_id), "state") if is_id(item_id) else None
    return state in (b"queued", b"running")


def maybe_sweep(svc: Services, *, background: bool = True) -> bool:
    """Sweep when no worker did within ``SPOOL_SWEEP_INTERVAL`` (a Redis lock); True when this one does.

    From the heartbeat the sweep runs in a thread of its own, so a long listing never delays a beat.
    """
    interval = max(1, int(svc.settings.sweep_interval))
    if not svc.redis.set(svc.keys.sweep_lock(), str(time.time()), nx=True, ex=interval):
        return False
    if not background:
        sweep(svc)
        return True

    def run() -> None:
        try:
            sweep(svc)
        except Exception:  # a failed sweep is retried at the next interval
            log.warning("retention sweep failed", exc_info=True)

    threading.Thread(target=run, name="spool-retention-sweep", daemon=True).start()
    return True
