"""Recovery, run from every worker heartbeat: no accepted job or book batch is left without a worker.

Two mechanisms, both sending work again only when the job store's compare-and-set says so:

* **Orphans** (:func:`recover_jobs`, :func:`recover_books`): a job or batch marked running on a worker
  that stopped beating (killed, host lost) is put back in the queue; a finished book whose assembly lock
  expired is assembled again.
* **Parses** (issue 14): a book still ``parsing`` whose parse worker stopped beating, or whose parse
  message nothing carries, gets its parse sent again; ``parse_attempts`` counts against ``max_attempts``.
* **Reconciliation** (:func:`reconcile`, one worker at a time under a Redis lock): every job or batch
  whose state says queued or running but which no live worker holds (heartbeats) and no broker message
  carries (the broker's queue lists and its unacked hash, read as kombu's Redis transport stores them)
  is queued again, once ``reconcile_grace`` seconds have passed since it was last enqueued or started.
  That covers a crash between storing a job and queuing it, a message lost with Redis' last second of
  writes, and a worker that gave a job up after losing Redis.

Every start counts an attempt; past ``max_attempts`` the job (or the book) fails with
``attempts_exhausted`` instead of being queued again, so a job that kills its worker is not retried forever.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config import defaults
from service import dispatch
from service.book_parse import BOOK, fail_parse, send_parse
from service.books import BookNotFoundError, BookRecord, BookStore, _text
from service.exceptions import AttemptsExhaustedError, BatchFailedError
from service.keys import Keys
from service.states import FINISHED, BookState
from service.task_names import BOOK_ASSEMBLE, BOOK_PARSE, BOOK_PLAN, BOOK_RENDER
from service.webhooks import notify

if TYPE_CHECKING:
    from service.jobs import Job
    from service.services import Services

log = logging.getLogger("spool.recovery")

#: Seconds between the two broker snapshots a sweep compares (a message between a worker's pop and
#: its entry in the unacked hash is in neither list for a moment; it cannot be missing from both reads).
SNAPSHOT_GAP = 0.25


def attempts_message(what: str, attempts: int) -> str:
    """The error message of a job or batch that used up its attempts."""
    return (
        f"{what} was started {attempts} time(s) and never finished: its worker stopped each time "
        "(killed, out of memory, or its host lost). It is not tried again; check the worker logs, and "
        "split the text into shorter pieces if it is very long (SPOOL_MAX_ATTEMPTS sets the limit)."
    )


# --------------------------------------------------------------------------------------- broker


@dataclass
class BrokerSnapshot:
    """What the broker's messages carry: job task ids, book batches, book plans and book parses."""

    task_ids: set[str] = field(default_factory=set)
    batches: set[tuple[str, int]] = field(default_factory=set)
    plans: set[str] = field(default_factory=set)
    parses: set[str] = field(default_factory=set)

    def __or__(self, other: BrokerSnapshot) -> BrokerSnapshot:
        return BrokerSnapshot(
            self.task_ids | other.task_ids,
            self.batches | other.batches,
            self.plans | other.plans,
            self.parses | other.parses,
        )


def _message_body_args(message: dict[str, Any]) -> list[Any]:
    """The positional arguments of a Celery (protocol 2) message as kombu stores it."""
    body = message.get("body")
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = json.loads(body)
    return list(decoded[0]) if isinstance(decoded, list) and decoded else []


def _read_message(raw: bytes | str, snapshot: BrokerSnapshot) -> None:
    """Add what one stored message carries to ``snapshot`` (unreadable messages are skipped)."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        headers = message.get("headers") or {}
        task, task_id = headers.get("task"), headers.get("id")
        if task_id:
            snapshot.task_ids.add(str(task_id))
        if task == BOOK_RENDER:
            book_id, batch = _message_body_args(message)[:2]
            snapshot.batches.add((str(book_id), int(batch)))
        elif task == BOOK_PLAN:
            snapshot.plans.add(str(_message_body_args(message)[0]))
        elif task == BOOK_PARSE:
            snapshot.parses.add(str(_message_body_args(message)[0]))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.debug("unreadable broker message skipped", exc_info=True)


def broker_snapshot(svc: Services, queues: set[str]) -> BrokerSnapshot:
    """Every message waiting on ``queues`` (all priority steps) or delivered and not yet acknowledged.

    kombu's Redis transport keeps one list per queue and priority step (``Keys.broker_queue``), each
    element a JSON message whose ``headers`` hold Celery's task name and id, and the hash ``unacked``
    (delivery tag -> ``[message, exchange, routing_key]``) of messages a worker holds. One MULTI reads them
    all at one instant.
    """
    prefix = svc.settings.broker_key_prefix
    with svc.redis.pipeline(transaction=True) as pipe:
        for queue in sorted(queues):
            for step in defaults.PRIORITY_STEPS:
                pipe.lrange(Keys.broker_queue(queue, step, prefix), 0, -1)
        pipe.hvals(Keys.broker_unacked(prefix))
        # The fair dispatcher's ready batches are carried too: a token will hand each one out.
        for queue in sorted(queues):
            pipe.zrange(svc.keys.dispatch_ready(queue), 0, -1)
        results = pipe.execute()
    lists = len(queues) * len(defaults.PRIORITY_STEPS) + 1
    snapshot = BrokerSnapshot()
    for rows in results[:lists]:
        for raw in rows:
            _read_message(raw, snapshot)
    for rows in results[lists:]:
        snapshot.batches |= dispatch.ready_members(rows)
    return snapshot


# ------------------------------------------------------------------------------------ orphans


def fail_exhausted(svc: Services, job: Job) -> bool:
    """Fail a job that used up its attempts (and end its chunk stream, fire its webhook)."""
    message = attempts_message(f"Job {job.id}", job.attempts)
    if not svc.jobs.fail(job.id, AttemptsExhaustedError.code, message):
        return False
    log.warning("job %s failed: %s", job.id, message)
    try:
        svc.streams.fail(job.id, AttemptsExhaustedError(message))
    except Exception:
        log.exception("could not end the chunk stream of job %s", job.id)
    final = svc.jobs.find(job.id)
    if final is not None:
        notify(svc, final)  # only enqueued: the webhook task delivers it
    return True


def _requeue_job(svc: Services, job: Job, holder: str | None) -> bool:
    """Queue a job again (a running one only if still on ``holder``), or fail it past its attempts."""
    if job.state == "running" and not svc.jobs.requeue_orphan(job, holder or ""):
        return False  # someone else moved it meanwhile
    if job.attempts >= svc.settings.max_attempts:
        fail_exhausted(svc, job)
        return False
    svc.enqueue(job, job.request_id)
    return True


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
        if _requeue_job(svc, job, job.worker):
            log.warning("job %s was running on %s, which stopped beating: requeued", job.id, job.worker)
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
        if rec.state == BookState.PARSING:
            if rec.parser and rec.parser not in live_workers:
                requeue_parse(store, rec, rec.parser, "its parse worker stopped beating")
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
        for field_name, value in batches.items():
            status = _text(value)
            if not status.startswith("running:") or status[len("running:") :] in live_workers:
                continue
            batch = int(_text(field_name))
            if _requeue_batch(store, book_id, batch, value, "stopped beating"):
                requeued.append((book_id, batch))
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


def requeue_parse(store: BookStore, rec: BookRecord, expected_parser: str, why: str) -> bool:
    """Send a book's parse again if ``expected_parser`` still holds it; fail the book past its attempts."""
    key = store.keys.book(rec.id)
    # Compare-and-set on the parser field: only the recovery that still sees the old holder acts.
    if _text(store.redis.hget(key, "parser")) != expected_parser:
        return False
    store.redis.hset(key, "parser", "")
    attempts = int(_text(store.redis.hget(key, "parse_attempts")) or 0)
    if attempts >= store.svc.settings.max_attempts:
        fail_parse(store.svc, rec.id, AttemptsExhaustedError.code, attempts_message(f"Parsing book {rec.id}", attempts))
        return False
    send_parse(store.svc, rec.id, BOOK)
    log.warning("book %s was parsing%s (%s): parse requeued", rec.id, f" on {expected_parser}" if expected_parser else "", why)
    return True


def _batch_attempts(store: BookStore, book_id: str, batch: int) -> int:
    """How many times a book batch was started."""
    return int(_text(store.redis.hget(store.keys.book_batch_attempts(book_id), str(batch))) or 0)


def _requeue_batch(store: BookStore, book_id: str, batch: int, expected: bytes | str, why: str) -> bool:
    """Queue a batch again if its status is still ``expected``; fail the book past its attempts."""
    key = store.keys.book_batches(book_id)
    expected_text = _text(expected)
    # Compare-and-set: only the recovery that still sees the old status acts.
    if _text(store.redis.hget(key, str(batch))) != expected_text:
        return False
    attempts = _batch_attempts(store, book_id, batch)
    if attempts >= store.svc.settings.max_attempts:
        message = attempts_message(f"Batch {batch} of book {book_id}", attempts)
        store.fail(book_id, AttemptsExhaustedError.code, message)
        log.warning("book %s failed: %s", book_id, message)
        return False
    store.redis.hset(key, str(batch), "queued")
    store.send_batch(book_id, batch)
    log.warning("book %s batch %d (%s) %s: requeued", book_id, batch, expected_text, why)
    return True


def batch_failed(store: BookStore, book_id: str, batch: int, exc: BaseException) -> bool:
    """A batch (or the assembly it started) raised: queue it again, or fail the book past its attempts.

    Returns True when it was queued again. The checkpoints already stored make the retry cheap.
    """
    key = store.keys.book_batches(book_id)
    status = _text(store.redis.hget(key, str(batch)))
    if store.state(book_id) in FINISHED:
        return False
    what = f"{type(exc).__name__}: {exc}"
    # Failures are counted apart from starts: a batch can fail before it is marked started.
    failures = int(store.redis.hincrby(store.keys.book_batch_attempts(book_id), f"{batch}:failed", 1))
    attempts = max(failures, _batch_attempts(store, book_id, batch))
    if status == "done":
        # The segments are stored; the assembly this batch ran failed. Free the lock for the next try.
        store.redis.delete(store.keys.book_lock(book_id))
        attempts = int(store.redis.hincrby(store.keys.book_batch_attempts(book_id), "assembly", 1))
    if attempts >= store.svc.settings.max_attempts:
        message = (
            f"Batch {batch} of book {book_id} failed {attempts} time(s); the last error was {what}. "
            "Check that the storage is reachable and writable (and the worker logs), then submit the "
            "book again: segments already rendered are reused."
        )
        store.fail(book_id, BatchFailedError.code, message)
        log.error("book %s failed: %s", book_id, message)
        return False
    log.warning("book %s batch %d failed (attempt %d: %s); queued again", book_id, batch, attempts, what)
    if status == "done":
        if store.try_assembly(book_id):
            store.svc.send_task(
                BOOK_ASSEMBLE,
                [book_id],
                queue=store.queue(book_id),
                priority=defaults.PRIORITIES["low"],
            )
        return True
    store.redis.hset(key, str(batch), "queued")
    store.send_batch(book_id, batch)
    return True


# ------------------------------------------------------------------------------- reconciliation


@dataclass
class Orphans:
    """What one sweep found in no worker's hands and no broker message."""

    jobs: list[Job] = field(default_factory=list)
    batches: list[tuple[str, int, str]] = field(default_factory=list)  # book, batch, status seen
    plans: list[str] = field(default_factory=list)
    parses: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.batches or self.plans or self.parses)


def _job_since(job: Job) -> float:
    """When the job was last enqueued or started (the sweep's grace counts from there)."""
    return max(job.created_at or 0.0, job.enqueued_at or 0.0, job.started_at or 0.0)


def _find_orphans(svc: Services, snapshot: BrokerSnapshot, now: float) -> tuple[Orphans, set[str]]:
    """Jobs, batches and plans that the state says are pending but nothing carries; and their queues."""
    grace = svc.settings.reconcile_grace
    beats = svc.workers.live()
    live = {b["name"] for b in beats}
    held_jobs = {b.get("current_job") for b in beats}
    held_batches = {b.get("current_batch") for b in beats}
    orphans = Orphans()
    queues: set[str] = set()
    for job in svc.jobs.jobs_in("queued") + svc.jobs.jobs_in("running"):
        if job.id in held_jobs or job.id in snapshot.task_ids or now - _job_since(job) < grace:
            continue
        if job.state == "running" and job.worker and job.worker not in live:
            continue  # a dead worker's job: recover_jobs' business
        orphans.jobs.append(job)
        queues.add(job.queue)
    store = svc.books
    for raw in svc.redis.smembers(svc.keys.books_active()):
        book_id = _text(raw)
        try:
            rec = store.record(book_id)
        except BookNotFoundError:
            continue
        if rec.state in FINISHED:
            continue
        queue = rec.queue or svc.settings.queue
        if rec.state == BookState.PARSING:
            if not rec.parser and book_id not in snapshot.parses and now - rec.created_at >= grace:
                orphans.parses.append(book_id)
                queues.add(svc.settings.parse_queue)
            continue
        if not rec.is_planned:
            if not rec.planner and book_id not in snapshot.plans and now - rec.created_at >= grace:
                orphans.plans.append(book_id)
                queues.add(queue)
            continue
        if now - float(rec.planned_at or 0) < grace:
            continue
        for field_name, value in svc.redis.hgetall(svc.keys.book_batches(book_id)).items():
            batch, status = int(_text(field_name)), _text(value)
            if status == "done" or (book_id, batch) in snapshot.batches:
                continue
            if f"{book_id}:{batch}" in held_batches:
                continue
            if status.startswith("running:") and status[len("running:") :] not in live:
                continue  # a dead worker's batch: recover_books' business
            orphans.batches.append((book_id, batch, status))
            queues.add(queue)
    return orphans, queues


def reconcile(svc: Services, *, holder: str = "sweep", locked: bool = True) -> Orphans:
    """Queue again every job, batch or plan that nothing carries; return what was found.

    ``locked``: take the sweep lock first (one worker per ``reconcile_interval``); a caller that already
    serialises (a test, an operator) may pass False.
    """
    settings = svc.settings
    if locked and not svc.redis.set(
        svc.keys.reconcile_lock(), holder, nx=True, ex=max(1, int(settings.reconcile_interval))
    ):
        return Orphans()
    queues = {
        settings.queue,
        settings.parse_queue,
        *defaults.QUEUES,
        *(q for w in svc.workers.live() for q in w.get("queues", ())),
    }
    dispatch.top_up(svc, queues)  # ready book batches whose tokens were lost get new ones
    first = broker_snapshot(svc, queues)
    orphans, extra_queues = _find_orphans(svc, first, time.time())
    if not orphans:
        return orphans
    # Confirm against a second snapshot a moment later, and against the state as it is now.
    time.sleep(SNAPSHOT_GAP)
    second = broker_snapshot(svc, queues | extra_queues)
    confirmed, _ = _find_orphans(svc, first | second, time.time())
    seen_jobs = {j.id for j in orphans.jobs}
    seen_batches = {(b, n) for b, n, _ in orphans.batches}
    result = Orphans()
    for job in confirmed.jobs:
        if job.id not in seen_jobs:
            continue
        if _requeue_job(svc, job, job.worker):
            log.warning(
                "job %s was %s but no worker held it and no broker message carried it: requeued",
                job.id,
                job.state,
            )
        result.jobs.append(job)
    for book_id, batch, status in confirmed.batches:
        if (book_id, batch) in seen_batches:
            _requeue_batch(svc.books, book_id, batch, status, "was carried by no worker and no message")
            result.batches.append((book_id, batch, status))
    for book_id in confirmed.plans:
        if book_id in orphans.plans:
            svc.books.send_plan(book_id)
            log.warning("book %s was never planned and no message carried its plan: requeued", book_id)
            result.plans.append(book_id)
    for book_id in confirmed.parses:
        if book_id in orphans.parses:
            try:
                rec = svc.books.record(book_id)
            except BookNotFoundError:
                continue
            requeue_parse(svc.books, rec, "", "no worker held it and no broker message carried its parse")
            result.parses.append(book_id)
    return result
