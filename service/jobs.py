"""The job store: every job's spec, state, progress and result in Redis.

A job is one hash (``Keys.job``) plus index sorted sets (all jobs, per state, per
owner, and the queued jobs of each broker queue for queue positions). Every state
change is one Lua script, so the hash, the indexes and the event published on
``Keys.job_events`` never disagree, and a transition that is not allowed (say,
``cancelled`` -> ``running``) is refused atomically.

Events are JSON objects on the job's channel:
``{"type": "state", "job_id", "state", "at", ...}`` and
``{"type": "progress", "job_id", "segments_done", "segments_total", "audio_seconds", "at"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis as redis_lib

from config import defaults
from service.exceptions import (
    IdempotencyConflictError,
    InvalidStateTransitionError,
    JobNotFoundError,
    ListenerGoneError,
)
from service.keys import Keys, check_owner, is_id, new_id
from service.record import HashRecord, flatten, hash_mapping
from service.states import JOB_STATES, JobState

#: Which states each state may be entered from. ``running`` -> ``running`` is a redelivery after a
#: lost worker; ``running`` -> ``queued`` (orphan recovery) goes through ``requeue_orphan`` only.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "queued": ("running",),
    "running": ("queued", "running"),
    "succeeded": ("running",),
    "failed": ("queued", "running"),
    "cancelled": ("queued", "running"),
}

# Queue-order scores: priority step first, then enqueue time in milliseconds (< 1e13 until year 2286).
_PRIORITY_WEIGHT = 1e13

_CREATE = """
local idem = KEYS[2]
if idem ~= '' then
  local existing = redis.call('GET', idem)
  if existing then return {0, existing} end
end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ttl)
if idem ~= '' then redis.call('SET', idem, ARGV[1], 'EX', ttl) end
for i = 3, 5 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[5])
return {1, ARGV[1]}
"""

# KEYS: job, state zsets (JOB_STATES order), queued zset, events channel
# ARGV: id, new state, allowed-from (comma list), ttl, event json, field, value, ...
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {-1, ''} end
local ok = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == cur then ok = true end end
if not ok then return {0, cur} end
local new = ARGV[2]
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
redis.call('HSET', KEYS[1], 'state', new)
if new == 'running' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local score = redis.call('HGET', KEYS[1], 'created_at')
local states = {'queued', 'running', 'succeeded', 'failed', 'cancelled'}
for i, s in ipairs(states) do
  if s == new then redis.call('ZADD', KEYS[1 + i], score, ARGV[1])
  else redis.call('ZREM', KEYS[1 + i], ARGV[1]) end
end
if new ~= 'queued' then redis.call('ZREM', KEYS[7], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('PUBLISH', KEYS[8], ARGV[5])
return {1, cur}
"""

# KEYS: job, events channel. ARGV: event json, field, value, ...
_PROGRESS = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= 'running' then return cur or '' end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', KEYS[2], ARGV[1])
return cur
"""

# KEYS: job, events channel. ARGV: event json. Marks a running job for cancellation.
_FLAG_CANCEL = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= 'running' then return cur or '' end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
redis.call('PUBLISH', KEYS[2], ARGV[1])
return cur
"""


# KEYS: job, running zset, queued zset, queue-order zset, events. ARGV: id, dead worker, order score, event.
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'started_at', '', 'worker', '', 'segments_done', '0',
           'audio_seconds', '0.0')
local score = redis.call('HGET', KEYS[1], 'created_at')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('PUBLISH', KEYS[5], ARGV[4])
return 1
"""

# KEYS: job. ARGV: time. Records that the job's task was sent (only while the job exists).
_MARK_ENQUEUED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enqueued_at', ARGV[1])
return 1
"""


#: Hash fields :meth:`JobStore.jobs_in` reads: what recovery needs to judge and requeue a job.
_SCAN_FIELDS = (
    "id",
    "state",
    "owner",
    "queue",
    "priority",
    "kind",
    "request_id",
    "created_at",
    "started_at",
    "enqueued_at",
    "worker",
    "attempts",
    "segments_done",
    "segments_total",
)


def iso_time(timestamp: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC string with milliseconds."""
    if timestamp is None:
        return None
    whole = math.floor(timestamp)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((timestamp - whole) * 1000):03d}Z"


@dataclass(frozen=True)
class JobSpec:
    """What to render: the validated fields of a job request."""

    text: str
    voice: str = defaults.VOICE
    speed: float = defaults.SPEED
    format: str = defaults.FORMAT
    language: str | None = None
    priority: str = defaults.PRIORITY
    webhook_url: str | None = None
    # Pronunciation (issue 17): a lexicon id and the version it had at submission; inline markup mode.
    lexicon: str | None = None
    lexicon_version: str | None = None
    markup: str = "none"
    # Automatic QA (issue 17 part 4): transcribe the finished audio and flag segments that are off.
    qa: bool = False

    def fingerprint(self) -> str:
        """Hash of the spec, to tell a retried request from a different one under the same Idempotency-Key."""
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Job(HashRecord):
    """One job as stored: spec, state, progress, timestamps, error and result (one Redis hash).

    The hash is this dataclass, field for field (:meth:`to_hash`, :meth:`from_hash`): a new field needs
    no change to the store. Hash fields that are not dataclass fields (``render_seconds``) land in ``extra``.
    """

    id: str
    state: JobState
    owner: str
    text: str = ""
    voice: str = defaults.VOICE
    speed: float = defaults.SPEED
    format: str = defaults.FORMAT
    language: str | None = None
    priority: str = defaults.PRIORITY
    queue: str = defaults.QUEUE
    kind: str = "job"
    webhook_url: str | None = None
    # Pronunciation (issue 17): a lexicon id and the version it had at submission; inline markup mode.
    lexicon: str | None = None
    lexicon_version: str | None = None
    markup: str = "none"
    qa: bool = False
    request_id: str | None = None
    fingerprint: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    segments_done: int = 0
    segments_total: int | None = None
    audio_seconds: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    result_key: str | None = None
    result_size: int | None = None
    result_duration: float | None = None
    result_content_type: str | None = None
    result_etag: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker: str | None = None
    # Webhook delivery (service/webhooks.py): pending until the job finishes, then queued, retrying,
    # delivered, failed or refused; None when the job has no webhook_url.
    webhook_state: str | None = None
    webhook_attempts: int = 0
    webhook_last_status: int | None = None
    # Durability: when the job's message was last handed to the broker (service/recovery.py).
    enqueued_at: float | None = None
    # Automatic QA (service/qa.py): running, done, unavailable or failed; the report as JSON.
    qa_state: str | None = None
    qa_report: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.state.is_terminal

    @property
    def spec(self) -> JobSpec:
        """The job's render spec."""
        return JobSpec(**{f.name: getattr(self, f.name) for f in fields(JobSpec)})

    @property
    def text_chars(self) -> int:
        """Length of the text, for ETAs."""
        return len(self.text)


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing and the cursor of the next page (None at the end)."""

    jobs: list[Job]
    next_cursor: str | None


def _encode_cursor(score: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}:{job_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    from service.exceptions import InvalidRequestError

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score_text, job_id = raw.split(":", 1)
        score = float(score_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequestError(
            "Invalid cursor: pass the 'next_cursor' value of the previous page unchanged.", field="cursor"
        ) from None
    if not is_id(job_id):
        raise InvalidRequestError(
            "Invalid cursor: pass the 'next_cursor' value of the previous page unchanged.", field="cursor"
        )
    return score, job_id


def _is_state_event(data: object) -> bool:
    """True when a pub/sub payload is a state event (progress events need no re-read)."""
    try:
        return json.loads(data).get("type") == "state"  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return False


class JobStore:
    """Creates, reads, lists and moves jobs through their states in Redis."""

    def __init__(self, redis: redis_lib.Redis, keys: Keys, ttl: int = defaults.JOB_TTL) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = int(ttl)
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)
        self._progress = redis.register_script(_PROGRESS)
        self._flag_cancel = redis.register_script(_FLAG_CANCEL)
        self._requeue = redis.register_script(_REQUEUE)
        self._mark_enqueued = redis.register_script(_MARK_ENQUEUED)

    # Creation and lookup -----------------------------------------------------------------------
    def create(
        self,
        spec: JobSpec,
        *,
        owner: str,
        queue: str = defaults.QUEUE,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        kind: str = "job",
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Store a new queued job: (job, True); or (existing job, False) for a reused Idempotency-Key.

        Raises IdempotencyConflictError when the key was used for a different request.
        """
        check_owner(owner)
        fingerprint = spec.fingerprint()
        idem_key = self.keys.idempotency(owner, idempotency_key) if idempotency_key else ""
        for _ in range(3):
            job_id = job_id or new_id()
            now = time.time()
            priority = defaults.PRIORITIES.get(spec.priority, defaults.PRIORITIES[defaults.PRIORITY])
            job = Job(job_id, JobState.QUEUED, owner, **asdict(spec), queue=queue, kind=kind, created_at=now)
            job.request_id, job.fingerprint = request_id, fingerprint
            job.webhook_state = "pending" if spec.webhook_url else None
            created, found_id = self._create(
                keys=[
                    self.keys.job(job_id),
                    idem_key,
                    self.keys.jobs_by_created(),
                    self.keys.jobs_in_state("queued"),
                    self.keys.owner_jobs(owner),
                    self.keys.queued(queue),
                ],
                args=[
                    job_id,
                    self.ttl,
                    repr(now),
                    repr(priority * _PRIORITY_WEIGHT + now * 1000),
                    repr(now - self.ttl),
                    *flatten(job.to_hash()),
                ],
            )
            found_id = found_id.decode() if isinstance(found_id, bytes) else found_id
            if created:
                return self.get(job_id), True
            existing = self.find(found_id)
            if existing is None:
                # The key outlived its job: forget it and create afresh.
                self.redis.delete(idem_key)
                job_id = None
                continue
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflictError(
                    "This Idempotency-Key was already used for a different request (job "
                    f"{existing.id}); send the same body again, or use a new key for a new job.",
                    job_id=existing.id,
                )
            return existing, False
        raise InvalidStateTransitionError("Could not store the job; try again.")

    def find(self, job_id: str, owner: str | None = None) -> Job | None:
        """Return the job, or None when it does not exist, has expired, or belongs to another owner."""
        if not is_id(job_id):
            return None
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        job = Job.from_hash(raw)
        if owner is not None and job.owner != owner:
            return None
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """Return the job or raise JobNotFoundError (also for another owner's job)."""
        job = self.find(job_id, owner)
        if job is None:
            raise JobNotFoundError(
                f"No job {job_id!r}: it does not exist, has expired, or belongs to another API key.",
                job_id=str(job_id),
            )
        return job

    def list(
        self,
        *,
        owner: str,
        state: str | None = None,
        limit: int = defaults.PAGE_SIZE,
        cursor: str | None = None,
    ) -> JobPage:
        """Return an owner's jobs, newest first, optionally in one state, ``limit`` at a time."""
        index = self.keys.owner_jobs(owner)
        max_score: float | str = "+inf"
        after_id: str | None = None
        if cursor:
            max_score, after_id = _decode_cursor(cursor)
        jobs: list[Job] = []
        last: tuple[float, str] | None = None
        more = False
        batch = max(limit * 2, 20)
        offset = 0
        while not more:
            rows = self.redis.zrevrangebyscore(
                index, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(rows)
            ids = [(m.decode() if isinstance(m, bytes) else m, s) for m, s in rows]
            if after_id is not None:
                # Members sharing the cursor's score sort by id, descending: skip those already returned.
                ids = [(m, s) for m, s in ids if not (s == max_score and m >= after_id)]
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in ids:
                    pipe.hgetall(self.keys.job(job_id))
                hashes = pipe.execute()
            stale = []
            for (job_id, score), raw in zip(ids, hashes, strict=True):
                if not raw:
                    stale.append(job_id)
                    continue
                job = Job.from_hash(raw)
                if state is not None and job.state != state:
                    continue
                if len(jobs) == limit:
                    more = True  # one match beyond the page: there is a next page
                    break
                jobs.append(job)
                last = (score, job_id)
            if stale:
                self.redis.zrem(index, *stale)  # expired jobs leave their index lazily
                offset -= len(stale)
            if len(rows) < batch:
                break
        return JobPage(jobs, _encode_cursor(*last) if more and last is not None else None)

    def count_by_state(self) -> dict[str, int]:
        """Number of jobs in each state (jobs within the retention time)."""
        cutoff = time.time() - self.ttl
        with self.redis.pipeline(transaction=False) as pipe:
            for state in JOB_STATES:
                pipe.zcount(self.keys.jobs_in_state(state), cutoff, "+inf")
            counts = pipe.execute()
        return dict(zip(JOB_STATES, (int(c) for c in counts), strict=True))

    # State changes ------------------------------------------------------------------------------
    def _move(
        self,
        job: Job | str,
        new_state: str,
        fields: Mapping[str, Any],
        event: Mapping[str, Any],
        allowed_from: Iterable[str] | None = None,
    ) -> tuple[bool, str | None]:
        """Run the transition script; return (moved, previous state or None when the job is gone)."""
        job_id = job.id if isinstance(job, Job) else job
        queue = job.queue if isinstance(job, Job) else self._queue_of(job_id)
        allowed = tuple(allowed_from) if allowed_from is not None else ALLOWED_FROM[new_state]
        payload = {"type": "state", "job_id": job_id, "state": new_state, "at": time.time(), **event}
        moved, previous = self._transition(
            keys=[
                self.keys.job(job_id),
                *(self.keys.jobs_in_state(s) for s in JOB_STATES),
                self.keys.queued(queue),
                self.keys.job_events(job_id),
            ],
            args=[job_id, new_state, ",".join(allowed), self.ttl, json.dumps(payload), *flatten(fields)],
        )
        previous = previous.decode() if isinstance(previous, bytes) else previous
        if moved == -1:
            return False, None
        return moved == 1, previous

    def _queue_of(self, job_id: str) -> str:
        queue = self.redis.hget(self.keys.job(job_id), "queue")
        return queue.decode() if queue else defaults.QUEUE

    def set_state(self, job_id: str, state: str, **fields: Any) -> Job:
        """Move a job to ``state`` (with extra hash fields) if the transition is allowed, else raise."""
        moved, previous = self._move(job_id, state, fields, {})
        if previous is None:
            raise JobNotFoundError(f"No job {job_id!r}.", job_id=job_id)
        if not moved:
            raise InvalidStateTransitionError(
                f"Job {job_id} is {previous}; it cannot become {state}.", state=previous, wanted=state
            )
        return self.get(job_id)

    def start(self, job_id: str, worker: str | None = None) -> Job | None:
        """Mark the job running (from queued, or again after a lost worker); None if it must not run."""
        now = time.time()
        fields = {
            "started_at": now,
            "worker": worker,
            "cancel_requested": False,
            "segments_done": 0,
            "audio_seconds": 0.0,
        }
        moved, _ = self._move(job_id, "running", fields, {"started_at": now, "worker": worker})
        return self.get(job_id) if moved else None

    def succeed(self, job_id: str, result: Mapping[str, Any]) -> bool:
        """Mark a running job succeeded with its result fields (``result_*``); False if it was not running."""
        now = time.time()
        fields = {"finished_at": now, **result}
        event = {
            "finished_at": now,
            "result": {
                k.removeprefix("result_"): v
                for k, v in result.items()
                if k.startswith("result_") and k != "result_key"
            },
        }
        moved, _ = self._move(job_id, "succeeded", fields, event)
        return moved

    def fail(self, job_id: str, code: str, message: str) -> bool:
        """Mark a queued or running job failed with an error code and message; False if already finished."""
        now = time.time()
        moved, _ = self._move(
            job_id,
            "failed",
            {"finished_at": now, "error_code": code, "error_message": message},
            {"finished_at": now, "error": {"code": code, "message": message}},
        )
        return moved

    def cancel(self, job_id: str) -> bool:
        """Mark a running job cancelled (the worker calls this when it stops on a cancel request)."""
        now = time.time()
        moved, _ = self._move(
            job_id, "cancelled", {"finished_at": now}, {"finished_at": now}, allowed_from=("running",)
        )
        return moved

    def requeue_orphan(self, job: Job, dead_worker: str) -> bool:
        """Put a job back in the queue if it is still running on ``dead_worker``; True if it was."""
        priority = defaults.PRIORITIES.get(job.priority, defaults.PRIORITIES[defaults.PRIORITY])
        now = time.time()
        payload = {"type": "state", "job_id": job.id, "state": "queued", "requeued": True, "at": now}
        moved = self._requeue(
            keys=[
                self.keys.job(job.id),
                self.keys.jobs_in_state("running"),
                self.keys.jobs_in_state("queued"),
                self.keys.queued(job.queue),
                self.keys.job_events(job.id),
            ],
            args=[job.id, dead_worker, repr(priority * _PRIORITY_WEIGHT + now * 1000), json.dumps(payload)],
        )
        return bool(moved)

    def hand_back(self, job: Job, worker: str) -> bool:
        """Put a job its worker is stopping for back in the queue, not counting the attempt; True if it was."""
        if not self.requeue_orphan(job, worker):
            return False
        self.redis.hincrby(self.keys.job(job.id), "attempts", -1)
        return True

    def mark_enqueued(self, job_id: str, step: int | None = None) -> None:
        """Record that the job's task is on the broker now (the sweep's grace counts from here).

        ``step``: the broker step it was sent at, when not its lane's own (an overflow step): its place
        in the queue-order index follows, so queue positions match the order workers take jobs in.
        """
        self._mark_enqueued(keys=[self.keys.job(job_id)], args=[repr(time.time())])
        if step is not None:
            queue, created, priority = self.redis.hmget(self.keys.job(job_id), "queue", "created_at", "priority")
            lane = defaults.PRIORITIES.get(priority.decode() if priority else "", step)
            if queue and created and lane != step:
                score = step * _PRIORITY_WEIGHT + float(created) * 1000
                self.redis.zadd(self.keys.queued(queue.decode()), {job_id: score}, xx=True)

    def running_jobs(self) -> list[Job]:
        """Every job now in the running state."""
        return self.jobs_in("running")

    def jobs_in(self, state: str) -> list[Job]:
        """Every job now in ``state``, read without its text (recovery scans these often; texts are large).

        The records carry every field but ``text``, ``webhook_url`` and the result; :meth:`get` has all.
        """
        ids = [m.decode() for m in self.redis.zrange(self.keys.jobs_in_state(state), 0, -1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), _SCAN_FIELDS)
            rows = pipe.execute()
        jobs = []
        for values in rows:
            raw = {name: value for name, value in zip(_SCAN_FIELDS, values, strict=True) if value is not None}
            if raw.get("id") and raw.get("state") == state.encode():
                jobs.append(Job.from_hash(raw))
        return jobs

    def request_cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a job: a queued one at once (it will never run), a running one after its current segment."""
        job = self.get(job_id, owner)
        if job.state == "queued":
            now = time.time()
            moved, previous = self._move(
                job, "cancelled", {"finished_at": now}, {"finished_at": now}, allowed_from=("queued",)
            )
            if moved or previous != "running":
                return self.get(job_id)
        payload = {
            "type": "state",
            "job_id": job_id,
            "state": "running",
            "cancel_requested": True,
            "at": time.time(),
        }
        self._flag_cancel(
            keys=[self.keys.job(job_id), self.keys.job_events(job_id)], args=[json.dumps(payload)]
        )
        return self.get(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        """True when the owner asked to cancel the job, or it is no longer running (cancelled, expired)."""
        state, flag = self.redis.hmget(self.keys.job(job_id), "state", "cancel_requested")
        return state is None or state != b"running" or flag == b"1"

    def progress(
        self, job_id: str, segments_done: int, segments_total: int | None, audio_seconds: float
    ) -> None:
        """Record progress of a running job and publish it."""
        payload = {
            "type": "progress",
            "job_id": job_id,
            "segments_done": segments_done,
            "segments_total": segments_total,
            "audio_seconds": round(audio_seconds, 3),
            "at": time.time(),
        }
        self._progress(
            keys=[self.keys.job(job_id), self.keys.job_events(job_id)],
            args=[
                json.dumps(payload),
                *flatten(
                    {
                        "segments_done": segments_done,
                        "segments_total": segments_total,
                        "audio_seconds": float(audio_seconds),
                    }
                ),
            ],
        )

    def set_fields(self, job_id: str, **fields: Any) -> None:
        """Set extra hash fields on an existing job (no event)."""
        if fields:
            self.redis.hset(self.keys.job(job_id), mapping=hash_mapping(fields))

    def wait(
        self, job_id: str, timeout: float, *, recheck: float = 2.0, gone: Callable[[], bool] | None = None
    ) -> Job:
        """Block until the job is finished or ``timeout`` seconds pass; return the job as last seen.

        Listens on the job's event channel (subscribed before the first read, so no change is missed)
        and re-reads the hash every ``recheck`` seconds in case a message was dropped. ``gone`` is
        asked between reads: when the waiting client has hung up, ListenerGoneError ends the wait.
        """
        deadline = time.monotonic() + timeout
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.job_events(job_id))
            job = self.get(job_id)
            while not job.is_terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if gone is not None and gone():
                    raise ListenerGoneError(f"The client waiting for job {job_id} hung up.", job_id=job_id)
                message = pubsub.get_message(timeout=min(recheck, remaining))
                if message is None or _is_state_event(message.get("data")) or remaining <= recheck:
                    job = self.get(job_id)
            return job
        finally:
            pubsub.close()

    # Queue position and ETA ----------------------------------------------------------------------
    def queue_position(self, job: Job) -> int | None:
        """1-based place of a queued job among the queued jobs of its queue (1 = next), else None."""
        if job.state != "queued":
            return None
        rank = self.redis.zrank(self.keys.queued(job.queue), job.id)
        return None if rank is None else int(rank) + 1

    def seconds_per_char(self, queue: str) -> float:
        """Measured wall seconds per text character on a queue (moving average), or the default."""
        value = self.redis.hget(self.keys.render_stats(), f"{queue}:seconds_per_char")
        return float(value) if value else defaults.SECONDS_PER_CHAR

    def record_render(self, queue: str, chars: int, seconds: float) -> None:
        """Fold one finished job's render rate into the queue's moving average."""
        if chars <= 0 or seconds <= 0:
            return
        old = self.seconds_per_char(queue)
        alpha = defaults.RATE_SMOOTHING
        new = (1 - alpha) * old + alpha * (seconds / chars)
        self.redis.hset(self.keys.render_stats(), f"{queue}:seconds_per_char", repr(new))

    def eta_seconds(self, job: Job, workers: int = 1, position: int | None = None) -> float | None:
        """Estimated seconds until the job finishes (None once finished)."""
        if job.is_terminal:
            return None
        rate = self.seconds_per_char(job.queue)
        if job.state == "running":
            elapsed = max(0.0, time.time() - (job.started_at or time.time()))
            if job.segments_total and job.segments_done:
                fraction = job.segments_done / job.segments_total
                return round(max(0.0, elapsed / fraction - elapsed), 1)
            return round(max(0.0, job.text_chars * rate - elapsed), 1)
        ahead_ids = []
        rank = (position - 1) if position else None
        if rank:
            ahead_ids = [
                m.decode() for m in self.redis.zrange(self.keys.queued(job.queue), 0, min(rank, 500) - 1)
            ]
        chars = job.text_chars
        if ahead_ids:
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ahead_ids:
                    pipe.hstrlen(self.keys.job(job_id), "text")
                chars += sum(int(n) for n in pipe.execute())
        return round(chars * rate / max(1, workers), 1)
