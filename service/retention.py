"""Retention: deleting a finished job's or book's stored files and Redis state, and the periodic sweep.

* :func:`purge_job` (``DELETE /v1/jobs/<id>`` of a finished job): everything under ``jobs/<id>/`` in
  storage (audio, stream replay, chunk index) and the job's hash, chunk stream and index entries.
* :func:`purge_book` (``DELETE /v1/books/<id>`` of a finished book): everything under ``books/<id>/``
  (source, plan, cover, outputs), the book's Redis state, and the segment checkpoints no other book
  uses. Checkpoints are content-keyed and shared (the same text, voice and speed renders once), so
  each book records the checkpoints it used (``Keys.book_checkpoints``) and a reference count per
  checkpoint (``Keys.checkpoint_refs``) says how many books use it; a purge deletes those it brings to 0.
  A book references a checkpoint before it looks for it, and the purge marks what it deletes in the
  same script that decides it (``Keys.checkpoint_deleting``), so a book rendering at the same time
  never counts on a file that is about to go.
* :func:`sweep` (every worker's heartbeat; one worker per ``SPOOL_SWEEP_INTERVAL`` under a lock):
  stored job and book files whose newest object is older than ``SPOOL_RETENTION_DAYS``, and checkpoints
  older than ``SPOOL_CHECKPOINT_RETENTION_DAYS`` that no book in flight uses. Unfinished jobs and books
  in flight are never swept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from service.keys import check_id, is_id
from service.states import JOB_STATES

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.retention")

#: Seconds in a day.
DAY = 86400.0

#: Seconds a checkpoint stays marked as being deleted when the purge or sweep that marked it dies
#: before unmarking it (a book that wants the checkpoint waits at most this long, then renders it).
DELETE_MARK_SECONDS = 120.0

#: Seconds between looks at a deletion mark while a book waits for it to go.
DELETE_MARK_POLL = 0.05

# Reference counting is atomic with deletion: a purge or sweep marks a checkpoint as being deleted
# (``Keys.checkpoint_deleting``) in the same script that decides to delete it, and a book refuses to
# reference a marked checkpoint until the mark is gone. So a book either holds its reference before
# the decision (the count keeps the file) or takes it after the file is gone (and renders it again).

# KEYS: the book's checkpoint set, the reference counts, the deletion marks. ARGV: now, checkpoint keys.
# References each key not being deleted; returns those that are (to be asked for again).
_REFERENCE = """
local busy = {}
for i = 2, #ARGV do
  local key = ARGV[i]
  local marked = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  if marked > tonumber(ARGV[1]) then
    table.insert(busy, key)
  else
    if marked > 0 then redis.call('HDEL', KEYS[3], key) end
    if redis.call('SADD', KEYS[1], key) == 1 then redis.call('HINCRBY', KEYS[2], key, 1) end
  end
end
return busy
"""

# KEYS: the reference counts, the deletion marks. ARGV: mark-until time, checkpoint keys.
# Returns the keys no book references any more, each marked as being deleted.
_RELEASE = """
local orphans = {}
for i = 2, #ARGV do
  local key = ARGV[i]
  if redis.call('HINCRBY', KEYS[1], key, -1) <= 0 then
    redis.call('HDEL', KEYS[1], key)
    redis.call('HSET', KEYS[2], key, ARGV[1])
    table.insert(orphans, key)
  end
end
return orphans
"""

# KEYS: the deletion marks. ARGV: mark-until time, now, checkpoint keys. Marks those not already being
# deleted by someone else and returns them (the sweep's claim).
_MARK = """
local marked = {}
for i = 3, #ARGV do
  local until_time = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if until_time <= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    table.insert(marked, ARGV[i])
  end
end
return marked
"""


def reference_checkpoints(svc: Services, book_id: str, keys: Iterable[str]) -> None:
    """Record that ``book_id`` uses these checkpoints (each counted once per book), before looking for them.

    A checkpoint another book's purge (or the sweep) is deleting right now is waited for until the
    deletion is over, so the caller then finds it gone and renders it, and never counts on a file
    that is about to vanish.
    """
    pending = list(dict.fromkeys(keys))
    book_set = svc.keys.book_checkpoints(book_id)
    if pending:
        held = svc.redis.smismember(book_set, pending)
        pending = [key for key, member in zip(pending, held, strict=True) if not member]
    while pending:
        busy = svc.redis.eval(
            _REFERENCE,
            3,
            book_set,
            svc.keys.checkpoint_refs(),
            svc.keys.checkpoint_deleting(),
            repr(time.time()),
            *pending,
        )
        pending = [key.decode() if isinstance(key, bytes) else key for key in busy]
        if pending:
            time.sleep(DELETE_MARK_POLL)


def reference_checkpoint(svc: Services, book_id: str, key: str) -> None:
    """Record that ``book_id`` uses checkpoint ``key`` (see :func:`reference_checkpoints`)."""
    reference_checkpoints(svc, book_id, [key])


def reference_plan(svc: Services, book_id: str, keys: Callable[[], list[str]]) -> None:
    """At a book's first batch (it references nothing yet): reference every checkpoint of its plan.

    So a purge of another book that shares them, at any time while this one renders, keeps them
    all; later batches (and a book whose plan changed) reference each one as they reach it.
    """
    if not svc.redis.scard(svc.keys.book_checkpoints(book_id)):
        reference_checkpoints(svc, book_id, keys())


def _delete_marked(svc: Services, key: str) -> None:
    """Delete a checkpoint this process marked, then lift the mark (also when the delete failed)."""
    try:
        svc.storage.delete(key)
    finally:
        svc.redis.hdel(svc.keys.checkpoint_deleting(), key)


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
    until = repr(time.time() + DELETE_MARK_SECONDS)
    orphans = (
        svc.redis.eval(_RELEASE, 2, keys.checkpoint_refs(), keys.checkpoint_deleting(), until, *used) if used else []
    )
    for key in orphans:
        _delete_marked(svc, key.decode() if isinstance(key, bytes) else key)
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
        old = [key for key, modified in svc.storage.list_modified("segments/") if modified < cutoff]
        # Mark first, then see which books in flight use them: a book that referenced one before the
        # mark is in the set read below; one that comes after the mark waits until it is gone.
        until = repr(time.time() + DELETE_MARK_SECONDS)
        marked = [
            k.decode()
            for k in (svc.redis.eval(_MARK, 1, svc.keys.checkpoint_deleting(), until, repr(time.time()), *old) if old else [])
        ]
        needed: set[str] = set()
        for raw in svc.redis.smembers(svc.keys.books_active()):
            needed.update(m.decode() for m in svc.redis.smembers(svc.keys.book_checkpoints(raw.decode())))
        for key in marked:
            if key in needed:
                svc.redis.hdel(svc.keys.checkpoint_deleting(), key)
                continue
            svc.redis.hdel(svc.keys.checkpoint_refs(), key)
            _delete_marked(svc, key)
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
