"""Why a job or a book waits, and how long: the ``queue`` object of their status (issue 19).

A queued job waits for the jobs ahead of it on its queue (its own lane and the lanes above: the
queue-order index ``Keys.queued`` is sorted by lane, then by enqueue time; book batches ride a lower
lane and never count) and for a worker to come free: a worker on a book frees after the segment it is
rendering (it gives way, ``service.lanes``), one on a job after that job's segments. The ETA plays
that out: each job ahead goes to the worker free soonest, at the measured seconds per segment
(a moving average over the segments workers render, ``Keys.render_stats``), and the job starts
when the next worker is free after them.

A book's batches share the workers round-robin by key, then by book (``service.dispatch``), after
interactive work: until it is done, every other key renders about as many segments as it does (or
all it has left, if fewer). Its ETA counts those and the interactive jobs queued now.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from config import defaults
from service import dispatch
from service.states import BookState

if TYPE_CHECKING:
    from service.books import BookRecord
    from service.jobs import Job
    from service.services import Services


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, AttributeError):
        return default


def seconds_per_segment(svc: Services, queue: str) -> float:
    """Measured wall seconds per rendered segment on a queue (moving average), or the default."""
    value = svc.redis.hget(svc.keys.render_stats(), f"{queue}:seconds_per_segment")
    return _num(value, defaults.SECONDS_PER_SEGMENT) if value else defaults.SECONDS_PER_SEGMENT


def chars_per_segment(svc: Services, queue: str) -> float:
    """Measured text characters per job segment on a queue (moving average), or the default."""
    value = svc.redis.hget(svc.keys.render_stats(), f"{queue}:chars_per_segment")
    return max(1.0, _num(value, defaults.CHARS_PER_SEGMENT)) if value else defaults.CHARS_PER_SEGMENT


def _fold(svc: Services, name: str, sample: float, old: float) -> None:
    alpha = defaults.RATE_SMOOTHING
    svc.redis.hset(svc.keys.render_stats(), name, repr((1 - alpha) * old + alpha * sample))


def record_segment(svc: Services, queue: str, seconds: float) -> None:
    """Fold one rendered segment's wall time into the queue's seconds per segment."""
    if seconds > 0:
        _fold(svc, f"{queue}:seconds_per_segment", seconds, seconds_per_segment(svc, queue))


def record_job(svc: Services, queue: str, chars: int, segments: int, seconds: float) -> None:
    """Fold one finished job into the queue's characters per segment and seconds per segment."""
    if segments <= 0 or chars <= 0 or seconds <= 0:
        return
    _fold(svc, f"{queue}:chars_per_segment", chars / segments, chars_per_segment(svc, queue))
    record_segment(svc, queue, seconds / segments)


def _job_segments(chars: float, total: float, done: float, cps: float) -> int:
    """Segments a job still has: known once it was split (a started job), else estimated from its text."""
    if total > 0:
        return max(1, int(total - done))
    return max(1, math.ceil(chars / cps))


def _queued_segments(svc: Services, ids: list[str], cps: float) -> list[tuple[str, int]]:
    """(lane, segments left) of each queued job, in order."""
    if not ids:
        return []
    with svc.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            key = svc.keys.job(job_id)
            pipe.hmget(key, "priority", "segments_total", "segments_done")
            pipe.hstrlen(key, "text")
        rows = pipe.execute()
    out = []
    for (priority, total, done), chars in zip(rows[0::2], rows[1::2], strict=True):
        lane = priority.decode() if isinstance(priority, bytes) else str(priority or defaults.PRIORITY)
        out.append((lane, _job_segments(_num(chars), _num(total), _num(done), cps)))
    return out


def _workers(svc: Services, queue: str, cps: float) -> list[tuple[str, int]]:
    """Each live worker on ``queue``: what it holds ("idle", "book", "job") and the segments until it is free."""
    beats = [w for w in svc.workers.live() if queue in w.get("queues", ())]
    out = []
    for beat in beats:
        job_id = beat.get("current_job")
        if job_id:
            total, done = svc.redis.hmget(svc.keys.job(job_id), "segments_total", "segments_done")
            chars = svc.redis.hstrlen(svc.keys.job(job_id), "text")
            out.append(("job", _job_segments(_num(chars), _num(total), _num(done), cps)))
        elif beat.get("current_batch"):
            out.append(("book", 1))  # it gives way after the segment it is rendering
        else:
            out.append(("idle", 0))
    return out


def _no_worker(queue: str) -> str:
    return f"No live worker consumes queue {queue!r}: it waits until one starts (spool worker --queues {queue})."


def _lanes(lanes: Iterable[str]) -> str:
    names = sorted(set(lanes), key=lambda n: defaults.PRIORITIES.get(n, 99))
    return " and ".join(names)


def job_wait(svc: Services, job: Job) -> dict[str, Any] | None:
    """Why a queued job waits: ``{position, ahead_segments, eta_seconds, reason}``; None once it runs."""
    if job.state != "queued":
        return None
    rank = svc.redis.zrank(svc.keys.queued(job.queue), job.id)
    position = None if rank is None else int(rank) + 1
    ahead_ids = []
    if rank:
        raw = svc.redis.zrange(svc.keys.queued(job.queue), 0, min(int(rank), defaults.MAX_AHEAD_READ) - 1)
        ahead_ids = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
    cps = chars_per_segment(svc, job.queue)
    sps = seconds_per_segment(svc, job.queue)
    ahead = _queued_segments(svc, ahead_ids, cps)
    workers = _workers(svc, job.queue, cps)
    own = _job_segments(job.text_chars, job.segments_total or 0, job.segments_done, cps)
    ahead_segments = sum(n for _, n in ahead) + sum(n for _, n in workers)
    # Play the queue out: each job ahead goes to the worker free soonest (with none live: as if one
    # started now, so the estimate is still of the work ahead).
    free = sorted(float(n) for _, n in workers) or [0.0]
    heapq.heapify(free)
    for _, n in ahead:
        heapq.heappush(free, heapq.heappop(free) + n)
    start = free[0]
    eta = round((start + own) * sps, 1)
    if not workers:
        reason = _no_worker(job.queue)
    elif ahead:
        lanes = _lanes(lane for lane, _ in ahead)
        reason = (
            f"{len(ahead)} job(s) ahead of it in the {lanes} lane(s) ({sum(n for _, n in ahead)} segment(s)), "
            f"on {len(workers)} worker(s); book segments never go first."
        )
    elif any(kind == "idle" for kind, _ in workers):
        reason = "Next: a free worker takes it now."
    elif any(kind == "book" for kind, _ in workers):
        reason = "Next: it starts when a worker finishes the book segment it is rendering (books give way)."
    else:
        left = min(n for _, n in workers)
        reason = f"Next: it starts when a worker finishes its current job ({left} segment(s) left)."
    return {"position": position, "ahead_segments": ahead_segments, "eta_seconds": eta, "reason": reason}


def _interactive_segments(svc: Services, queue: str, cps: float) -> int:
    """Segments of the jobs queued on ``queue`` now (they all go before book batches)."""
    raw = svc.redis.zrange(svc.keys.queued(queue), 0, defaults.MAX_AHEAD_READ - 1)
    ids = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
    return sum(n for _, n in _queued_segments(svc, ids, cps))


def _remaining(svc: Services, book_ids: list[str]) -> dict[str, int]:
    """Segments each book has left to render."""
    with svc.redis.pipeline(transaction=False) as pipe:
        for book_id in book_ids:
            pipe.hget(svc.keys.book(book_id), "segments_total")
            pipe.scard(svc.keys.book_done(book_id))
        rows = pipe.execute()
    return {b: max(0, int(_num(t)) - int(d)) for b, t, d in zip(book_ids, rows[0::2], rows[1::2], strict=True)}


def book_wait(svc: Services, rec: BookRecord, done: int) -> dict[str, Any] | None:
    """Why a book waits and whom it shares the workers with: ``{position, ahead_segments, eta_seconds, reason}``.

    None once it is being assembled or has finished.
    """
    if rec.state not in (BookState.QUEUED, BookState.RENDERING):
        return None
    queue = rec.queue or svc.settings.queue
    cps = chars_per_segment(svc, queue)
    sps = seconds_per_segment(svc, queue)
    workers = _workers(svc, queue, cps)
    interactive = _interactive_segments(svc, queue, cps)
    if not rec.is_planned:
        reason = _no_worker(queue) if not workers else "Waiting for a worker to split it into segments."
        return {"position": None, "ahead_segments": interactive, "eta_seconds": None, "reason": reason}
    mine = max(0, rec.segments_total - done)
    sharers = [s for s in dispatch.rotation(svc, queue) if s.book_id != rec.id]
    left = _remaining(svc, [s.book_id for s in sharers])
    by_owner: dict[str, int] = {}
    own_books = 1
    for s in sharers:
        if s.owner == rec.owner:
            own_books += 1
        by_owner[s.owner] = by_owner.get(s.owner, 0) + left.get(s.book_id, 0)
    # Round-robin by key, then by book: while this book renders its `mine` segments, its key's other
    # books render as many each (or all they have left), and every other key as many as its key does.
    own_other = min(by_owner.pop(rec.owner, 0), (own_books - 1) * mine)
    turns = mine + own_other
    others = sum(min(n, turns) for n in by_owner.values())
    ahead = interactive + others + own_other
    eta = round((ahead + mine) * sps / len(workers), 1) if workers and mine else None
    if not workers:
        reason = _no_worker(queue)
    elif not sharers:
        reason = (
            f"Rendering on {len(workers)} worker(s); interactive jobs go first "
            "(a book segment gives way to them)."
        )
    else:
        keys = len({s.owner for s in sharers if s.owner != rec.owner})
        reason = (
            f"Sharing {len(workers)} worker(s) round-robin with {len(sharers)} other book(s) "
            f"({keys} other key(s)); interactive jobs go first."
        )
    return {"position": None, "ahead_segments": ahead, "eta_seconds": eta, "reason": reason}
