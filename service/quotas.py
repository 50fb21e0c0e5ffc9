"""Per-key quotas and stream caps, counted in Redis by Lua scripts so concurrent requests cannot overshoot.

* **Concurrent jobs**: an owner's admitted job ids live in a sorted set (``Keys.owner_active_jobs``).
  A job counts while it is queued or running, which the job store's state sets already say
  atomically: the admission script drops members found in neither, so a job frees its slot the
  moment it succeeds, fails, is cancelled or is failed by recovery, with no release call to forget.
  A member admitted in the last :data:`ADMISSION_GRACE` seconds counts even before its job is stored.
* **Characters per day**: one counter per owner and calendar UTC day (``Keys.owner_chars``),
  charged at admission and kept for two days; it resets at 00:00 UTC (``Retry-After`` says when).
* **Books in flight**: like jobs, against the set of books being planned, rendered or assembled.
* **Lanes**: the priority names a key may ask for (403 ``lane_not_allowed`` otherwise).
* **Streams**: open stream slots per owner and in all (``Keys.owner_streams``, ``Keys.all_streams``),
  each a lease the stream renews while it sends, so a web process that dies frees its slots; and a
  per-process count, so the listeners of one process never take the threads its API needs.

Limits come from the deployment settings, overridden per owner by ``SPOOL_KEY_QUOTAS``; 0: no limit.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import redis as redis_lib

from config.settings import QUOTA_FIELDS, parse_key_quotas
from service.exceptions import LaneNotAllowedError, QuotaExceededError
from service.keys import Keys

if TYPE_CHECKING:
    from config.settings import Settings

#: Seconds an admitted job or book counts before its record must exist in the state sets.
ADMISSION_GRACE = 30.0

#: With no concurrency limit, finished members are pruned once an owner's set grows past this.
UNLIMITED_PRUNE_AT = 1000

#: Seconds a stream slot lives without a renewal: the reader's idle timeout (900 s) and a margin.
STREAM_LEASE = 960.0

#: Seconds between lease renewals of a stream that is sending.
STREAM_RENEW_EVERY = 30.0

#: Seconds a day counter is kept (the day itself and one more, for clock skew between processes).
DAY_COUNTER_TTL = 2 * 86400

# KEYS: owner's active set, state set A, state set B (a member in either is live), day counter.
# ARGV: member, now, grace, limit, chars, chars limit, day ttl, stale-before score, set ttl, prune-at.
# A member's score is 0 once its job or book is stored (confirmed), else its admission time (pending).
# Returns {0, in use, chars used} when admitted; {1, in use} over the count; {2, chars used} over chars.
_ADMIT = """
local active = KEYS[1]
local now, grace, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stale_before = tonumber(ARGV[8])
local card = redis.call('ZCARD', active)
if (limit > 0 and card >= limit) or (limit == 0 and card >= tonumber(ARGV[10])) then
  local members = redis.call('ZRANGE', active, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local m, admitted = members[i], tonumber(members[i + 1])
    local live
    if KEYS[3] == KEYS[2] then
      live = redis.call('SISMEMBER', KEYS[2], m) == 1
    else
      local created = redis.call('ZSCORE', KEYS[2], m) or redis.call('ZSCORE', KEYS[3], m)
      live = created and tonumber(created) > stale_before
    end
    if not live and (admitted == 0 or admitted < now - grace) then redis.call('ZREM', active, m) end
  end
  card = redis.call('ZCARD', active)
end
if limit > 0 and card >= limit then return {1, card} end
local chars, max_chars = tonumber(ARGV[5]), tonumber(ARGV[6])
local used = 0
if KEYS[4] ~= '' then used = tonumber(redis.call('GET', KEYS[4]) or '0') end
if max_chars > 0 and used + chars > max_chars then return {2, used} end
redis.call('ZADD', active, now, ARGV[1])
redis.call('EXPIRE', active, ARGV[9])
if KEYS[4] ~= '' and chars > 0 then
  used = redis.call('INCRBY', KEYS[4], chars)
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return {0, card + 1, used}
"""

# KEYS: owner's slots, every slot. ARGV: slot, now, lease, per-owner limit, total limit.
# Returns {0, mine, all} when taken; {1, mine} over the owner's cap; {2, all} over the total.
_ACQUIRE_STREAM = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local mine, all = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
if tonumber(ARGV[4]) > 0 and mine >= tonumber(ARGV[4]) then return {1, mine} end
if tonumber(ARGV[5]) > 0 and all >= tonumber(ARGV[5]) then return {2, all} end
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('ZADD', KEYS[2], expiry, ARGV[1])
local ttl = math.ceil(tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {0, mine + 1, all + 1}
"""


@dataclass(frozen=True)
class Limits:
    """The quotas of one owner (0: no limit)."""

    max_concurrent_jobs: int
    max_chars_per_day: int
    max_books_in_flight: int
    allowed_lanes: tuple[str, ...]
    max_streams_per_key: int


def utc_day(now: float | None = None) -> str:
    """The calendar UTC day of ``now`` as ``YYYYMMDD``."""
    return time.strftime("%Y%m%d", time.gmtime(time.time() if now is None else now))


def seconds_to_utc_midnight(now: float | None = None) -> int:
    """Whole seconds until the next 00:00 UTC (at least 1)."""
    now = time.time() if now is None else now
    return max(1, int(86400 - now % 86400) + 1)


class Quotas:
    """Admission control for jobs, books and streams, per owner."""

    def __init__(self, redis: redis_lib.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.overrides = parse_key_quotas(settings.key_quotas)
        self._admit = redis.register_script(_ADMIT)
        self._acquire_stream = redis.register_script(_ACQUIRE_STREAM)
        self._local_streams = 0
        self._local_lock = threading.Lock()

    # Limits --------------------------------------------------------------------------------------
    def limits(self, owner: str) -> Limits:
        """The deployment's limits with the owner's ``SPOOL_KEY_QUOTAS`` entry on top."""
        values: dict[str, Any] = {name: getattr(self.settings, name) for name in QUOTA_FIELDS}
        values.update(self.overrides.get(owner, {}))
        return Limits(**{f.name: values[f.name] for f in fields(Limits)})

    def check_lane(self, owner: str, lane: str) -> None:
        """Raise LaneNotAllowedError unless the owner may use the priority lane ``lane``."""
        allowed = self.limits(owner).allowed_lanes
        if lane not in allowed:
            raise LaneNotAllowedError(
                f"This API key may not use the {lane!r} priority lane; allowed: {', '.join(allowed)}. "
                "Ask for one of those (or omit 'priority'), or ask the operator to allow it.",
                field="priority",
                lane=lane,
                allowed=list(allowed),
            )

    def lane_for(self, owner: str, wanted: str) -> str:
        """``wanted`` when the owner may use it, else the owner's first allowed lane (speech requests)."""
        allowed = self.limits(owner).allowed_lanes
        return wanted if wanted in allowed else allowed[0]

    # Jobs ----------------------------------------------------------------------------------------
    def admit_job(self, owner: str, job_id: str, chars: int, *, now: float | None = None) -> None:
        """Reserve a concurrent-job slot and ``chars`` of today's characters, or raise QuotaExceededError."""
        now = time.time() if now is None else now
        limits = self.limits(owner)
        ttl = self.settings.job_ttl
        reply = self._admit(
            keys=[
                self.keys.owner_active_jobs(owner),
                self.keys.jobs_in_state("queued"),
                self.keys.jobs_in_state("running"),
                self.keys.owner_chars(owner, utc_day(now)),
            ],
            args=[
                job_id,
                repr(now),
                ADMISSION_GRACE,
                limits.max_concurrent_jobs,
                int(chars),
                limits.max_chars_per_day,
                DAY_COUNTER_TTL,
                repr(now - ttl),
                ttl,
                UNLIMITED_PRUNE_AT,
            ],
        )
        status = int(reply[0])
        if status == 1:
            limit = limits.max_concurrent_jobs
            raise QuotaExceededError(
                f"This API key already has {int(reply[1])} unfinished job(s), its limit of concurrent jobs "
                f"({limit}); wait for one to finish (or cancel one) and submit again.",
                retry_after=self.settings.quota_retry_after,
                limit="max_concurrent_jobs",
                value=limit,
                current=int(reply[1]),
            )
        if status == 2:
            limit = limits.max_chars_per_day
            used = int(reply[1])
            raise QuotaExceededError(
                f"This job's {chars:,} characters would take this API key past its {limit:,} characters "
                f"per day ({used:,} used today, UTC); the count resets at 00:00 UTC.",
                retry_after=seconds_to_utc_midnight(now),
                limit="max_chars_per_day",
                value=limit,
                current=used,
                requested=int(chars),
            )

    def confirm_job(self, owner: str, job_id: str) -> None:
        """Mark an admitted job as stored: from now on it counts exactly while it is queued or running."""
        self.redis.zadd(self.keys.owner_active_jobs(owner), {job_id: 0}, xx=True)

    def release_job(self, owner: str, job_id: str, chars: int, *, now: float | None = None) -> None:
        """Give back a reservation whose job was never created (an Idempotency-Key replay)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.owner_active_jobs(owner), job_id)
            if chars > 0:
                pipe.decrby(self.keys.owner_chars(owner, utc_day(now)), int(chars))
            pipe.execute()

    def usage(self, owner: str, *, now: float | None = None) -> dict[str, int]:
        """Characters used today (UTC) and members counted in the job and book sets (after pruning)."""
        raw = self.redis.get(self.keys.owner_chars(owner, utc_day(now)))
        return {
            "chars_today": int(raw or 0),
            "jobs": int(self.redis.zcard(self.keys.owner_active_jobs(owner))),
            "books": int(self.redis.zcard(self.keys.owner_active_books(owner))),
        }

    # Books ---------------------------------------------------------------------------------------
    def admit_book(self, owner: str, *, now: float | None = None) -> str:
        """Reserve a book-in-flight slot; return its token (bind it to the book id with :meth:`bind_book`)."""
        now = time.time() if now is None else now
        limits = self.limits(owner)
        token = "pending-" + uuid.uuid4().hex
        active = self.keys.books_active()
        reply = self._admit(
            keys=[self.keys.owner_active_books(owner), active, active, ""],
            args=[
                token,
                repr(now),
                ADMISSION_GRACE,
                limits.max_books_in_flight,
                0,
                0,
                DAY_COUNTER_TTL,
                repr(now - self.settings.job_ttl),
                self.settings.job_ttl,
                UNLIMITED_PRUNE_AT,
            ],
        )
        if int(reply[0]) == 1:
            limit = limits.max_books_in_flight
            raise QuotaExceededError(
                f"This API key already has {int(reply[1])} book(s) in flight, its limit ({limit}); wait for "
                "one to finish (or cancel one) and upload again.",
                retry_after=self.settings.quota_retry_after,
                limit="max_books_in_flight",
                value=limit,
                current=int(reply[1]),
            )
        return token

    def bind_book(self, owner: str, token: str, book_id: str) -> None:
        """Replace a book reservation's token by the book id it became (one transaction)."""
        key = self.keys.owner_active_books(owner)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(key, token)
            pipe.zadd(key, {book_id: 0})  # confirmed: counts while the book is in the active set
            pipe.execute()

    def release_book(self, owner: str, token: str) -> None:
        """Give back a book reservation whose book was never stored."""
        self.redis.zrem(self.keys.owner_active_books(owner), token)

    # Streams -------------------------------------------------------------------------------------
    def acquire_stream(self, owner: str, *, now: float | None = None) -> str:
        """Take an open-stream slot (this process, the owner, the deployment) or raise QuotaExceededError."""
        retry = self.settings.quota_retry_after
        per_process = self.settings.max_streams_per_process
        with self._local_lock:
            if per_process and self._local_streams >= per_process:
                raise QuotaExceededError(
                    f"This web process already holds {self._local_streams} open streams, its limit "
                    f"(SPOOL_MAX_STREAMS_PER_PROCESS={per_process}); retry shortly.",
                    retry_after=retry,
                    limit="max_streams_per_process",
                    value=per_process,
                    current=self._local_streams,
                )
            self._local_streams += 1
        slot = uuid.uuid4().hex
        limits = self.limits(owner)
        try:
            reply = self._acquire_stream(
                keys=[self.keys.owner_streams(owner), self.keys.all_streams()],
                args=[
                    slot,
                    repr(time.time() if now is None else now),
                    STREAM_LEASE,
                    limits.max_streams_per_key,
                    self.settings.max_streams,
                ],
            )
        except BaseException:
            self._release_local()
            raise
        status = int(reply[0])
        if status == 0:
            return slot
        self._release_local()
        if status == 1:
            raise QuotaExceededError(
                f"This API key already has {int(reply[1])} open stream(s), its limit "
                f"({limits.max_streams_per_key}); close one (or download finished audio) and retry.",
                retry_after=retry,
                limit="max_streams_per_key",
                value=limits.max_streams_per_key,
                current=int(reply[1]),
            )
        raise QuotaExceededError(
            f"Spool already serves {int(reply[1])} open streams, its limit (SPOOL_MAX_STREAMS="
            f"{self.settings.max_streams}); retry shortly.",
            retry_after=retry,
            limit="max_streams",
            value=self.settings.max_streams,
            current=int(reply[1]),
        )

    def renew_stream(self, owner: str, slot: str) -> None:
        """Extend a slot's lease (only if it is still held)."""
        expiry = time.time() + STREAM_LEASE
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.owner_streams(owner), {slot: expiry}, xx=True)
            pipe.zadd(self.keys.all_streams(), {slot: expiry}, xx=True)
            pipe.execute()

    def release_stream(self, owner: str, slot: str) -> None:
        """Give a stream slot back (Redis and this process)."""
        self._release_local()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.owner_streams(owner), slot)
            pipe.zrem(self.keys.all_streams(), slot)
            pipe.execute()

    def _release_local(self) -> None:
        with self._local_lock:
            self._local_streams = max(0, self._local_streams - 1)

    def open_streams(self, owner: str | None = None) -> int:
        """Open stream slots of one owner, or of the deployment (leases that have not run out)."""
        key = self.keys.owner_streams(owner) if owner else self.keys.all_streams()
        return int(self.redis.zcount(key, time.time(), "+inf"))


class StreamSlot:
    """One held stream slot: renewed while the stream sends, released once (idempotent)."""

    def __init__(self, quotas: Quotas, owner: str) -> None:
        self.quotas = quotas
        self.owner = owner
        self.slot = quotas.acquire_stream(owner)
        self._renewed = time.monotonic()
        self._released = False
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Renew the lease when the last renewal is :data:`STREAM_RENEW_EVERY` seconds old."""
        if self._released or time.monotonic() - self._renewed < STREAM_RENEW_EVERY:
            return
        self._renewed = time.monotonic()
        try:
            self.quotas.renew_stream(self.owner, self.slot)
        except redis_lib.RedisError:
            pass  # the stream itself will notice Redis is gone

    def release(self) -> None:
        """Give the slot back (the first call only)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        try:
            self.quotas.release_stream(self.owner, self.slot)
        except redis_lib.RedisError:
            pass  # the lease runs out by itself
