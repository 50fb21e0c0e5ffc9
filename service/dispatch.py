"""Fair dispatch of book batches: round-robin across owners (API keys), then across each owner's books.

Book batches used to go to kombu's low lane one message per batch, first in first out, so a second
book waited for every batch of the first. Now a planned (or handed back, or recovered) batch is made
*ready* instead: its member ``<book>:<batch:06d>`` joins the queue's ready set
(``Keys.dispatch_ready``), its book joins the rotation of its owner and the owner the rotation of the
queue; and one *token* (``spool.book_next(queue)``, low lane) is sent per ready batch. A token says
"render the next batch that is fair now", not which one: the worker that takes it asks :func:`take_next`,
which picks the owner served longest ago, that owner's book served longest ago, and the book's
lowest ready batch (batches of one book stay in order, so ``batch_spans``' single-segment tail still
comes last). Fairness is decided when a worker becomes free, so a book submitted by key B while key
A's book renders gets the next batch after A's current one, and then they alternate.

A newcomer (an owner or book not in the rotation) joins at turn 0: it is served next.

Tokens are fungible. A token that finds nothing ready (its batch was taken by a surplus token, or
its book was cancelled) does nothing; a missing token (lost with Redis' last second of writes, or a
crash between making a batch ready and sending its token) is made up by :func:`top_up`, which the
reconciliation sweep runs: ready batches of books made ready more than the grace ago, minus the
tokens waiting, is what is missing. Priority lanes are untouched: tokens ride the low lane, so
interactive jobs overtake them, and a rendering batch still gives way (``service.lanes``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config import defaults
from service.keys import Keys
from service.task_names import BOOK_NEXT

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger("spool.dispatch")

#: Times :func:`take_next` retries when another worker took the batch it picked in between.
TAKE_RETRIES = 8


def member(book_id: str, batch: int) -> str:
    """A batch's member in the ready set (zero-padded, so a book's batches sort in order)."""
    return f"{book_id}:{batch:06d}"


# KEYS: ready, books, owners, book-owner, readied, the book's batches hash.
# ARGV: book, owner, now, batch... Marks each batch queued and ready; the book and owner join the
# rotation at turn 0 when they are not in it (a newcomer is served next), else keep their turn.
_READY = """
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], 0, ARGV[1] .. ':' .. string.format('%06d', tonumber(ARGV[i])))
  redis.call('HSET', KEYS[6], ARGV[i], 'queued')
end
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', 0, ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
return #ARGV - 3
"""

# KEYS: ready, books, owners, book-owner, readied. Returns {book, owner, member} of the fair next
# batch (owner served longest ago, then its book served longest ago, then the book's first batch), or
# false. Books and owners with nothing ready leave the rotation here.
_PICK = """
local owners = redis.call('ZRANGE', KEYS[3], 0, -1)
local books = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, owner in ipairs(owners) do
  for _, book in ipairs(books) do
    if redis.call('HGET', KEYS[4], book) == owner then
      local first = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. book .. ':', '[' .. book .. ';', 'LIMIT', 0, 1)
      if #first > 0 then return {book, owner, first[1]} end
      redis.call('ZREM', KEYS[2], book)
      redis.call('HDEL', KEYS[4], book)
      redis.call('HDEL', KEYS[5], book)
    end
  end
  redis.call('ZREM', KEYS[3], owner)
end
for _, book in ipairs(books) do
  if not redis.call('HGET', KEYS[4], book) then redis.call('ZREM', KEYS[2], book) end
end
return false
"""

# KEYS: ready, books, owners, turn, the book's batches hash. ARGV: member, book, owner, batch, worker.
# Takes the picked batch if it is still ready (compare-and-set): marks it running on the worker and
# moves the book and its owner to the back of their rotations. 1 taken, 0 gone, -1 the book is gone.
_TAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
redis.call('HSET', KEYS[5], ARGV[4], 'running:' .. ARGV[5])
local turn = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], 'XX', turn, ARGV[2])
redis.call('ZADD', KEYS[3], 'XX', turn, ARGV[3])
return 1
"""


def _rotation_keys(svc: Services, queue: str) -> list[str]:
    keys = svc.keys
    return [
        keys.dispatch_ready(queue),
        keys.dispatch_books(queue),
        keys.dispatch_owners(queue),
        keys.dispatch_book_owner(queue),
        keys.dispatch_readied(queue),
    ]


def make_ready(svc: Services, queue: str, book_id: str, owner: str, batches: Iterable[int]) -> int:
    """Mark batches queued and ready on ``queue`` and send one token each; return how many."""
    numbers = [int(b) for b in batches]
    if not numbers:
        return 0
    keys = [*_rotation_keys(svc, queue), svc.keys.book_batches(book_id)]
    svc.redis.eval(_READY, len(keys), *keys, book_id, owner, repr(time.time()), *numbers)
    svc.redis.expire(svc.keys.book_batches(book_id), svc.settings.job_ttl)
    send_tokens(svc, queue, len(numbers))
    return len(numbers)


def send_tokens(svc: Services, queue: str, count: int) -> None:
    """Send ``count`` tokens (each: render the fair next batch of ``queue``) on its low lane."""
    for _ in range(count):
        svc.send_task(BOOK_NEXT, [queue], queue=queue, priority=defaults.PRIORITIES["low"])


def take_next(svc: Services, queue: str, worker: str) -> tuple[str, int] | None:
    """Take the fair next ready batch of ``queue`` for ``worker`` (marked running on it), or None."""
    rotation = _rotation_keys(svc, queue)
    for _ in range(TAKE_RETRIES):
        picked = svc.redis.eval(_PICK, len(rotation), *rotation)
        if not picked:
            return None
        book_id, owner, raw = (_text(v) for v in picked)
        batch = int(raw.rsplit(":", 1)[1])
        keys = [rotation[0], rotation[1], rotation[2], svc.keys.dispatch_turn(queue), svc.keys.book_batches(book_id)]
        taken = int(svc.redis.eval(_TAKE, len(keys), *keys, raw, book_id, owner, batch, worker))
        if taken == 1:
            return book_id, batch
        if taken == -1:
            withdraw(svc, queue, book_id)  # a deleted book's leftovers: drop them, pick again
    return None


def withdraw(svc: Services, queue: str, book_id: str) -> int:
    """Take a book's ready batches out of the rotation (cancelled, failed, deleted); return how many."""
    keys = svc.keys
    with svc.redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebylex(keys.dispatch_ready(queue), f"[{book_id}:", f"[{book_id};")
        pipe.zrem(keys.dispatch_books(queue), book_id)
        pipe.hdel(keys.dispatch_book_owner(queue), book_id)
        pipe.hdel(keys.dispatch_readied(queue), book_id)
        removed = pipe.execute()[0]
    return int(removed)


def ready_batches(svc: Services, queue: str, book_id: str) -> set[int]:
    """The batch numbers of one book that are ready (waiting for a token) on ``queue``."""
    rows = svc.redis.zrangebylex(svc.keys.dispatch_ready(queue), f"[{book_id}:", f"[{book_id};")
    return {int(_text(r).rsplit(":", 1)[1]) for r in rows}


def ready_members(raw_members: Iterable[bytes | str]) -> set[tuple[str, int]]:
    """(book, batch) pairs of raw ready-set members."""
    pairs = set()
    for raw in raw_members:
        book_id, _, batch = _text(raw).rpartition(":")
        if book_id and batch.isdigit():
            pairs.add((book_id, int(batch)))
    return pairs


@dataclass(frozen=True)
class Sharer:
    """One book in a queue's rotation, for the status of books that share the workers."""

    book_id: str
    owner: str
    ready_batches: int


def rotation(svc: Services, queue: str) -> list[Sharer]:
    """The books with ready batches on ``queue`` (their owners and how many batches each has ready)."""
    keys = svc.keys
    owners = svc.redis.hgetall(keys.dispatch_book_owner(queue))
    books = [(_text(b), _text(o)) for b, o in owners.items()]
    if not books:
        return []
    ready = keys.dispatch_ready(queue)
    with svc.redis.pipeline(transaction=False) as pipe:
        for book_id, _ in books:
            pipe.zlexcount(ready, f"[{book_id}:", f"[{book_id};")
        counts = pipe.execute()
    return [Sharer(b, o, int(n)) for (b, o), n in zip(books, counts, strict=True) if int(n)]


# ------------------------------------------------------------------------------------ top-up


def _token_count(rows: Iterable[bytes | str]) -> int:
    """How many of the broker messages are tokens."""
    count = 0
    for raw in rows:
        try:
            message = json.loads(raw)
            if isinstance(message, list):
                message = message[0]
            if (message.get("headers") or {}).get("task") == BOOK_NEXT:
                count += 1
        except (ValueError, TypeError, AttributeError, IndexError):
            continue
    return count


def missing_tokens(svc: Services, queue: str, grace: float, now: float | None = None) -> int:
    """Ready batches with no token to carry them (books made ready within ``grace`` are not counted).

    One MULTI reads the ready set, the rotation's ready times and the queue's broker lists at one
    instant. Tokens a worker has taken are not counted: a worker picks its batch the moment it takes a
    token, so the moment between is all a read can miss, and a surplus token costs nothing.
    """
    now = time.time() if now is None else now
    keys = svc.keys
    prefix = svc.settings.broker_key_prefix
    with svc.redis.pipeline(transaction=True) as pipe:
        pipe.zrange(keys.dispatch_ready(queue), 0, -1)
        pipe.hgetall(keys.dispatch_readied(queue))
        for step in defaults.PRIORITY_STEPS:
            pipe.lrange(Keys.broker_queue(queue, step, prefix), 0, -1)
        ready, readied, *lists = pipe.execute()
    young = {_text(b) for b, at in readied.items() if now - float(_text(at) or 0) < grace}
    settled = sum(1 for book_id, _ in ready_members(ready) if book_id not in young)
    tokens = sum(_token_count(rows) for rows in lists)
    return max(0, settled - tokens)


def top_up(svc: Services, queues: Iterable[str], gap: float = 0.25) -> dict[str, int]:
    """Send the tokens missing on each queue (seen missing in two reads ``gap`` apart); return the counts."""
    grace = svc.settings.reconcile_grace
    first = {q: missing_tokens(svc, q, grace) for q in sorted(set(queues))}
    if not any(first.values()):
        return {}
    time.sleep(gap)
    sent = {}
    for queue, missing in first.items():
        count = min(missing, missing_tokens(svc, queue, grace)) if missing else 0
        if count:
            send_tokens(svc, queue, count)
            log.warning("%d ready book batch(es) on %s had no token to carry them: tokens sent", count, queue)
            sent[queue] = count
    return sent


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
